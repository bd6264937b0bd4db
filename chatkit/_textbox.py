"""The pane's text box: an input that is correct under an IME and never loses the last keystrokes.

``ipywidgets.Text`` is not enough for a chat box, for two reasons found with a real composition
driven through Chromium (``tests/test_jupyterlab.py``):

* it submits on ``keypress`` with a separate custom message, while the value travels as a state
  update that ipywidgets holds back while an earlier update is unanswered — so the submit can
  overtake the last keystrokes: ``안녕하세요`` typed with an IME was sent as ``안녕하세``;
* it has no notion of composition (``isComposing`` / ``keyCode 229``).

This widget (an ``anywidget``: a few lines of front-end code, no build step) sends the text *with*
the submit, ignores the Enter that finishes composing a syllable, and reports composition as typing.
"""

from __future__ import annotations

import anywidget
import traitlets

__all__ = ["ChatInput"]

_ESM = """
function render({ model, el }) {
  const input = document.createElement("input");
  input.type = "text";
  input.className = "chatkit-input";
  input.autocomplete = "off";
  let composing = false;
  const sync = () => {
    input.placeholder = model.get("placeholder");
    input.disabled = model.get("disabled");
    if (!composing && input.value !== model.get("value")) input.value = model.get("value");
  };
  const typing = () => model.send({ event: "typing" });
  input.addEventListener("compositionstart", () => { composing = true; typing(); });
  input.addEventListener("compositionupdate", typing);
  input.addEventListener("compositionend", () => { composing = false; });
  input.addEventListener("input", () => { model.set("value", input.value); model.save_changes(); });
  input.addEventListener("keydown", (event) => {
    event.stopPropagation(); // the notebook's shortcuts stay out of the text box
    if (event.key !== "Enter") return;
    event.preventDefault();
    // The Enter that finishes composing a syllable (isComposing; keyCode 229 in Safari) is not "send".
    if (event.isComposing || event.keyCode === 229 || composing) return;
    const value = input.value;
    if (!value.trim()) return;
    model.send({ event: "submit", value }); // the text travels with the submit
    input.value = ""; // and replaces any update still held back, so it cannot come back
    model.set("value", "");
    model.save_changes();
  });
  input.addEventListener("keypress", (event) => event.stopPropagation());
  model.on("change:value", sync);
  model.on("change:placeholder", sync);
  model.on("change:disabled", sync);
  sync();
  el.appendChild(input);
}
export default { render };
"""

_CSS = """
.chatkit-input { width: 100%; box-sizing: border-box; padding: 5px 12px; border: 1px solid #ddd;
                 border-radius: 15px; font: inherit; }
.chatkit-input:disabled { background: #f5f5f5; }
"""


class ChatInput(anywidget.AnyWidget):
    """A one-line text box whose front end sends ``{"event": "submit", "value": text}`` on Enter
    (never while an IME is composing) and ``{"event": "typing"}`` while composing."""

    _esm = traitlets.Unicode(_ESM).tag(sync=True)
    _css = traitlets.Unicode(_CSS).tag(sync=True)
    value = traitlets.Unicode("").tag(sync=True)
    placeholder = traitlets.Unicode("").tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)
