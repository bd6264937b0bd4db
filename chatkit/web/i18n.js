// chatkit's page in English and Korean: the strings, the language choice and locale formatting.
// Loaded before chat.js. Dates, times and lists are formatted by Intl (the browser's CLDR data),
// never by hand. To add a language, add a table with the same keys and an <option> in index.html.
"use strict";

(() => {
  const STRINGS = {
    en: {
      "page.title": "chatkit",
      "join.room": "Room",
      "join.name": "Name",
      "join.name_placeholder": "your name",
      "join.code": "Join code",
      "join.transport": "Transport",
      "join.submit": "Join",
      "join.room_invalid": "1 to 64 letters, digits, '_' or '-' (any script)",
      "lang.label": "Language",
      "status.open": "Connected",
      "status.connecting": "Connecting…",
      "status.reconnecting": "Reconnecting in {seconds} s (attempt {attempt})",
      "status.closed": "Disconnected",
      "status.closed_error": "Disconnected: {error}",
      "room.leave": "leave",
      "room.online": "online: {users}",
      "room.online_more": "online: {users} and {count} more",
      "messages.older": "Load older messages",
      "input.placeholder": "Type a message...",
      "input.send": "Send",
      "input.stop": "Stop",
      "typing.one": "{users} is typing…",
      "typing.many": "{users} are typing…",
      "receipt.read_by": "read by {users}",
      "receipt.sent": "sent",
      "message.status.streaming": "streaming",
      "message.status.cancelled": "cancelled",
      "message.status.error": "error",
      "message.status.interrupted": "interrupted",
      "error.line": "⚠ {code}: {message}",
      "input.attach": "Attach a file",
      "input.record": "Record a voice message",
      "input.record_stop": "Stop recording and send",
      "record.unavailable": "the microphone is not available ({error})",
      "upload.sending": "Uploading {name}…",
      "upload.too_large": "{name} is too large (at most {max})",
      "upload.unsupported_type": "{name} is not an image, audio or PDF file",
      "upload.failed": "{name} could not be uploaded",
      "upload.bad_image": "{name} is not a readable image",
      "upload.image_too_large": "{name} has too many pixels",
      "upload.empty_file": "{name} is empty",
      "attachment.audio": "voice message {name}",
      "message.delete": "delete",
      "message.delete_title": "delete this message for everyone",
      "message.not_sent": "not sent · {code}: {message}",
      "reaction.add": "react",
      "signin.unreachable": "⚠ the server did not answer the sign-in ({error})",
    },
    ko: {
      "page.title": "chatkit 채팅",
      "join.room": "채팅방",
      "join.name": "이름",
      "join.name_placeholder": "이름을 입력하세요",
      "join.code": "입장 코드",
      "join.transport": "전송 방식",
      "join.submit": "입장",
      "join.room_invalid": "글자, 숫자, '_', '-'로 1~64자 (한글 가능)",
      "lang.label": "언어",
      "status.open": "연결됨",
      "status.connecting": "연결 중…",
      "status.reconnecting": "{seconds}초 후 재연결 (시도 {attempt}회)",
      "status.closed": "연결 안됨",
      "status.closed_error": "연결 안됨: {error}",
      "room.leave": "나가기",
      "room.online": "접속 중: {users}",
      "room.online_more": "접속 중: {users} 외 {count}명",
      "messages.older": "이전 메시지 불러오기",
      "input.placeholder": "메시지를 입력하세요...",
      "input.send": "전송",
      "input.stop": "중지",
      "typing.one": "{users}님이 입력 중…",
      "typing.many": "{users}님이 입력 중…",
      "receipt.read_by": "{users} 읽음",
      "receipt.sent": "보냄",
      "message.status.streaming": "스트리밍 중",
      "message.status.cancelled": "취소됨",
      "message.status.error": "오류",
      "message.status.interrupted": "중단됨",
      "error.line": "⚠ {message} ({code})",
      "input.attach": "파일 첨부",
      "input.record": "음성 메시지 녹음",
      "input.record_stop": "녹음 끝내고 보내기",
      "record.unavailable": "마이크를 사용할 수 없습니다 ({error})",
      "upload.sending": "올리는 중: {name}…",
      "upload.too_large": "파일이 너무 큽니다: {name} (최대 {max})",
      "upload.unsupported_type": "보낼 수 없는 형식입니다: {name} (이미지, 오디오, PDF만 가능)",
      "upload.failed": "올리지 못했습니다: {name}",
      "upload.bad_image": "이미지를 읽을 수 없습니다: {name}",
      "upload.image_too_large": "이미지 픽셀 수가 너무 많습니다: {name}",
      "upload.empty_file": "빈 파일입니다: {name}",
      "attachment.audio": "음성 메시지 {name}",
      "message.delete": "삭제",
      "message.delete_title": "모두에게서 이 메시지 삭제",
      "message.not_sent": "전송되지 않음 · {message} ({code})",
      "reaction.add": "반응 달기",
      "signin.unreachable": "⚠ 서버가 로그인 요청에 응답하지 않았습니다 ({error})",
      // The server's error codes (docs/protocol.md); an unknown code shows the server's own text.
      "error.bad_json": "올바른 JSON이 아닙니다.",
      "error.not_an_object": "프레임은 JSON 객체여야 합니다.",
      "error.unknown_type": "알 수 없는 프레임 종류입니다.",
      "error.missing_field": "필요한 필드가 빠졌습니다.",
      "error.bad_field": "필드 값이 올바르지 않습니다.",
      "error.empty_message": "빈 메시지는 보낼 수 없습니다.",
      "error.too_long": "메시지가 너무 깁니다.",
      "error.rate_limited": "너무 빨리 보내고 있습니다. 잠시 후 다시 보내세요.",
      "error.busy": "AI가 다른 질문에 답하는 중이라 이 메시지에는 답하지 않습니다. 메시지는 저장되었습니다.",
      "error.unknown_message": "이 채팅방에 없는 메시지입니다.",
      "error.shutting_down": "서버가 종료되는 중입니다.",
      "error.bad_session_id": "채팅방 이름이 올바르지 않습니다.",
      "error.bad_user": "이름이 올바르지 않습니다.",
      "error.llm_auth": "AI 모델 인증에 실패했습니다 (API 키를 확인하세요).",
      "error.llm_rate_limited": "AI 모델의 요청 한도를 넘었습니다.",
      "error.llm_timeout": "AI 모델이 제때 응답하지 않았습니다.",
      "error.llm_unreachable": "AI 모델 서버에 연결할 수 없습니다.",
      "error.llm_stream_dropped": "AI 응답 스트림이 중간에 끊겼습니다.",
      "error.llm_error": "AI 모델에서 오류가 발생했습니다.",
      "error.binary_frame": "프레임은 바이너리가 아니라 텍스트(UTF-8 JSON)로 보내야 합니다.",
      "error.outbox_full": "보내지 못한 메시지가 너무 많습니다. 연결이 돌아오면 다시 보내세요.",
      "error.duplicate_client_id": "같은 메시지가 이미 전송을 기다리고 있습니다.",
      "error.too_many_reactions": "이 메시지에는 반응을 더 달 수 없습니다 (한 사람당 20개까지).",
      "error.reserved_name": "쓸 수 없는 이름입니다 (예약된 이름).",
      "error.name_mismatch": "로그인한 이름과 다릅니다. 이름은 토큰에 적힌 것을 씁니다.",
      "error.bad_request": "잘못된 요청입니다.",
      "error.not_found": "찾을 수 없습니다.",
      "error.method_not_allowed": "허용되지 않는 요청 방식입니다.",
      "error.too_large": "보낸 데이터가 너무 큽니다.",
      "error.unsupported_media_type": "요청 형식(Content-Type)이 올바르지 않습니다.",
      "error.store_full": "서버의 디스크가 가득 찼습니다. 잠시 후 다시 보내세요.",
      "error.store_error": "서버의 데이터베이스에 문제가 생겼습니다. 잠시 후 다시 보내세요.",
      "error.store_readonly": "서버의 데이터베이스가 읽기 전용이라 저장할 수 없습니다.",
      "error.store_closed": "서버의 데이터베이스가 닫혀 있습니다.",
      "error.store_unavailable": "서버의 데이터베이스에 연결할 수 없습니다.",
      "error.too_many_connections": "서버에 연결이 너무 많습니다. 잠시 후 다시 시도하세요.",
      "error.too_many_rooms": "이 주소에서 새 채팅방을 너무 많이 만들었습니다. 잠시 후 다시 시도하세요.",
      "error.too_many_streams": "이 주소에서 연 이벤트 스트림이 너무 많습니다.",
      // Sign-in (docs/protocol.md, "Sign-in, roles and refusals").
      "error.auth_required": "로그인이 필요합니다 (이 서버는 토큰을 요구합니다).",
      "error.bad_token": "토큰이 올바르지 않습니다. 다시 로그인하세요.",
      "error.expired_token": "토큰이 만료되었습니다. 다시 로그인하세요.",
      "error.bad_join_code": "입장 코드가 틀렸습니다.",
      "error.login_disabled": "이 서버는 입장 코드로 로그인하지 않습니다. 선생님께 토큰을 받으세요.",
      "error.forbidden": "이 작업을 할 권한이 없습니다.",
      "error.origin_not_allowed": "이 페이지의 출처(Origin)에서는 이 서버를 쓸 수 없습니다.",
      // Files (uploads and attachments).
      "error.unsupported_type": "지원하지 않는 파일 형식입니다 (이미지, 음성, PDF만 올릴 수 있습니다).",
      "error.bad_image": "이미지 파일을 읽을 수 없습니다.",
      "error.image_too_large": "이미지의 픽셀 수가 너무 많습니다.",
      "error.empty_file": "빈 파일입니다.",
      "error.bad_attachment": "첨부 파일을 찾을 수 없습니다. 다시 올려 주세요.",
      "error.unknown_file": "없는 파일입니다.",
    },
  };
  const SUPPORTED = Object.keys(STRINGS);
  const STORAGE_KEY = "chatkit.lang";

  // "ko-KR" → "ko"; anything we have no table for → "en".
  function supported(tag) {
    const base = String(tag || "").toLowerCase().split(/[-_]/)[0];
    return SUPPORTED.includes(base) ? base : null;
  }

  function stored() {
    try { return localStorage.getItem(STORAGE_KEY); } catch { return null; } // storage may be blocked
  }

  // ?lang= (a link for a class) > the user's earlier choice > the browser's languages > English.
  function initialLanguage() {
    const candidates = [new URLSearchParams(location.search).get("lang"), stored(),
                        ...(navigator.languages || []), navigator.language];
    for (const tag of candidates) { const lang = supported(tag); if (lang) return lang; }
    return "en";
  }

  let language = initialLanguage();

  function t(key, params = {}) {
    const table = STRINGS[language];
    const text = key in table ? table[key] : (STRINGS.en[key] ?? key);
    return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
  }

  // A server error in the page's language: a known code is translated, otherwise its own text.
  function errorMessage(code, message) {
    const key = `error.${code}`;
    return key in STRINGS[language] ? STRINGS[language][key] : message;
  }

  function errorText(code, message) {
    return t("error.line", { code, message: errorMessage(code, message) });
  }

  function formatTime(iso) {
    const date = new Date(iso);
    if (!iso || Number.isNaN(date.getTime())) return "";
    return new Intl.DateTimeFormat(language, { hour: "numeric", minute: "2-digit" }).format(date);
  }

  function formatList(names) {
    return new Intl.ListFormat(language, { style: "short", type: "conjunction" }).format(names);
  }

  // Static text in the HTML: data-i18n (text), data-i18n-placeholder, data-i18n-title.
  function apply(root = document) {
    document.documentElement.lang = language;
    document.title = t("page.title");
    for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of root.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
    for (const node of root.querySelectorAll("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
    for (const node of root.querySelectorAll("select[data-language-switch]")) node.value = language;
  }

  function setLanguage(lang) {
    const chosen = supported(lang);
    if (!chosen || chosen === language) return;
    language = chosen;
    try { localStorage.setItem(STORAGE_KEY, chosen); } catch { /* not remembered, still switched */ }
    apply();
    document.dispatchEvent(new CustomEvent("chatkit:language", { detail: { language } }));
  }

  window.chatkitI18n = {
    t, errorText, errorMessage, formatTime, formatList, apply, setLanguage, SUPPORTED, STRINGS,
    get language() { return language; },
  };

  function start() {
    apply();
    for (const select of document.querySelectorAll("select[data-language-switch]")) {
      select.addEventListener("change", () => setLanguage(select.value));
    }
  }
  // Loaded at the end of <body>, before chat.js: the page is there, translate it at once.
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
