// The seed document's services/websocket.ts, with its TypeScript types removed and nothing else
// changed except the host (the seed hard-codes localhost:8000; here it is argv[2]). Run by
// tests/test_hangul_rooms.py: node --experimental-websocket websocket_service.mjs HOST:PORT ROOM
const HOST = process.argv[2];
const ROOM = process.argv[3];

class WebSocketService {
  socket = null;
  messageHandlers = [];

  connect(sessionId) {
    return new Promise((resolve, reject) => {
      this.socket = new WebSocket(
        `ws://${HOST}/ws/chat/${sessionId}/`
      );

      this.socket.onopen = () => {
        console.error('WebSocket 연결 성공');
        resolve();
      };

      this.socket.onerror = (error) => {
        console.error('WebSocket 에러:', error);
        reject(error);
      };

      this.socket.onmessage = (event) => {
        const data = JSON.parse(event.data);
        this.handleMessage(data);
      };

      this.socket.onclose = () => {
        console.error('WebSocket 연결 종료');
        // (the seed reconnects here; this run ends instead)
      };
    });
  }

  handleMessage(data) {
    switch(data.type) {
      case 'connection':
        console.error('연결됨:', data.message);
        this.messageHandlers.forEach(handler => handler({ type: 'connection', content: data.message }));
        break;
      case 'ai_chunk':
        this.messageHandlers.forEach(handler =>
          handler({
            type: 'chunk',
            content: data.chunk
          })
        );
        break;
      case 'ai_complete':
        this.messageHandlers.forEach(handler =>
          handler({
            type: 'complete',
            content: data.message
          })
        );
        break;
      case 'message':
        this.messageHandlers.forEach(handler =>
          handler({
            type: 'message',
            content: data.message,
            isUser: data.is_user
          })
        );
        break;
    }
  }

  sendMessage(message) {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({
        message
      }));
    }
  }

  onMessage(handler) {
    this.messageHandlers.push(handler);
  }

  disconnect() {
    if (this.socket) {
      this.socket.close();
      this.socket = null;
    }
  }
}

// What the seed's ChatInterface does: connect, send, show chunks, stop at the complete reply.
const service = new WebSocketService();
const seen = [];
service.onMessage((data) => {
  seen.push(data);
  if (data.type === 'connection') service.sendMessage('seed client says hi');
  if (data.type === 'complete') {
    console.log(JSON.stringify(seen));
    service.disconnect();
  }
});
await service.connect(ROOM);
