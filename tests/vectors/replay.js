// Replays the JSON vectors against chatkit/web/resume.js under Node and prints what the
// JavaScript copy produced, as JSON: {"resume": {case: [[out, cursor], ...]},
// "outbox": {case: [result, ...]}}; tests/test_resume.py compares it with the vectors.
// Usage: node replay.js RESUME_JS RESUME_VECTORS OUTBOX_VECTORS
"use strict";
const fs = require("fs");
const path = require("path");

const [resumeJs, resumeVectors, outboxVectors] = process.argv.slice(2);
const { ResumeState, Outbox, limitsFrom } = require(path.resolve(resumeJs));
const load = (file) => JSON.parse(fs.readFileSync(file, "utf8")).cases;

const resume = {};
for (const testCase of load(resumeVectors)) {
  const state = new ResumeState(testCase.after);
  resume[testCase.name] = testCase.steps.map((step) => {
    const frame = structuredClone(step.in);
    if (frame.type === "connection") state.connected(frame);
    return [state.accept(frame), state.cursor];
  });
}

function normalize(result) {
  if (result === null) return null;
  const out = { kind: result.kind, client_id: result.pending.client_id };
  if (result.kind === "acknowledged") out.id = result.frame.id ?? null;
  if (result.kind === "refused") Object.assign(out, { code: result.code, message: result.message });
  if (result.kind === "retrying") Object.assign(out, { code: result.code, at: result.at });
  return out;
}

const outbox = {};
for (const testCase of load(outboxVectors)) {
  const box = new Outbox(testCase.limit ?? 100);
  outbox[testCase.name] = testCase.steps.map((step) => {
    if ("add" in step) {
      try { box.add(step.add.client_id, step.add.text); return null; } catch (error) { return error.code; }
    }
    if ("connected" in step) { box.connected(limitsFrom(step.connected.limits), step.connected.now); return null; }
    if ("disconnected" in step) { box.disconnected(); return null; }
    if ("remove" in step) { const p = box.remove(step.remove); return p && p.client_id; }
    if ("due" in step) { const { send, wait } = box.due(step.due); return { send: send.map((p) => p.client_id), wait }; }
    if ("receive" in step) return normalize(box.receive(structuredClone(step.receive), step.now));
    if ("texts" in step) return box.texts;
    throw new Error(`unknown step ${JSON.stringify(step)}`);
  });
}
process.stdout.write(JSON.stringify({ resume, outbox }));
