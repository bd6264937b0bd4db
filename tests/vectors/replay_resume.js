// Replays tests/vectors/resume.json against chatkit/web/resume.js under Node and prints what
// the JavaScript copy produced ({case: [[out, cursor], ...]}) as JSON; tests/test_resume.py
// compares it with the vectors. Usage: node replay_resume.js RESUME_JS VECTORS_JSON
"use strict";
const fs = require("fs");
const path = require("path");

const [resumeJs, vectorsJson] = process.argv.slice(2);
const { ResumeState } = require(path.resolve(resumeJs));
const vectors = JSON.parse(fs.readFileSync(vectorsJson, "utf8"));
const results = {};
for (const testCase of vectors.cases) {
  const state = new ResumeState(testCase.after);
  results[testCase.name] = testCase.steps.map((step) => {
    const frame = structuredClone(step.in);
    if (frame.type === "connection") state.connected(frame);
    const out = state.accept(frame);
    return [out, state.cursor];
  });
}
process.stdout.write(JSON.stringify(results));
