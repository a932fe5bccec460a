"""`serve`'s GET /: a page a person can try the model on, with no front-end build step.

One self-contained HTML document (inline CSS and JavaScript, no external request): paste a text, press Explain, see
the label and each class's probability from POST /predict, and the words shaded by their attribution from POST
/explain (green for the class, red against; hover for the score). A token model's answer is the text with its
entity spans marked, then each entity with the words shaded by how much they made it (POST /explain, per entity).
A refused request shows the server's own one-line error. The page calls the same endpoints as any client, so it
shows exactly what they answer.
"""
from __future__ import annotations

import html

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body{font:16px/1.6 system-ui,sans-serif;max-width:52em;margin:2em auto;padding:0 1em;color:#222}
textarea{width:100%;min-height:7em;font:inherit;padding:.5em;box-sizing:border-box}
button{font:inherit;padding:.4em 1.2em;margin:.5em 0;cursor:pointer}
#error{color:#b00020;white-space:pre-wrap}
#label{font-size:1.3em;font-weight:600}
.w{padding:1px 3px;border-radius:3px;line-height:2}
table{border-collapse:collapse}td{padding:.1em .8em .1em 0}
.muted{color:#666;font-size:.9em}
</style></head><body>
<h1>__TITLE__</h1>
<p class="muted">__ABOUT__</p>
<textarea id="text" placeholder="Paste a text here"></textarea><br>
<button id="go">Explain</button>
<div id="error" role="alert"></div>
<div id="result" hidden>
  <p>Label: <span id="label"></span> <span id="confidence" class="muted"></span></p>
  <table id="probabilities"></table>
  <h2>Why</h2>
  <p id="words"></p>
  <div id="entities"></div>
  <p id="method" class="muted"></p>
</div>
<script>
const $ = id => document.getElementById(id);
async function call(path, body) {
  const r = await fetch(path, {method: "POST", headers: {"content-type": "application/json"},
                               body: JSON.stringify(body)});
  const data = await r.json().catch(() => ({error: r.status + " " + r.statusText}));
  if (!r.ok) throw new Error(data.error || JSON.stringify(data));
  return data;
}
function shade(words) {
  const peak = Math.max(1e-12, ...words.map(w => Math.abs(w.score)));
  return words.map(w => {
    const a = (Math.min(1, Math.abs(w.score) / peak) * 0.8).toFixed(2);
    const rgb = w.score > 0 ? "40,160,70" : "220,50,50";
    const s = document.createElement("span");
    s.className = "w"; s.textContent = w.word; s.title = (w.score > 0 ? "+" : "") + w.score.toFixed(4);
    s.style.background = "rgba(" + rgb + "," + a + ")";
    return s;
  });
}
function spans(text, entities) {
  const out = []; let at = 0;
  for (const e of entities) {
    out.push(document.createTextNode(text.slice(at, e.start)));
    const s = document.createElement("span");
    s.className = "w"; s.textContent = text.slice(e.start, e.end); s.title = e.type;
    s.style.background = "rgba(40,120,220,0.35)"; out.push(s); at = e.end;
  }
  out.push(document.createTextNode(text.slice(at)));
  return out;
}
$("go").addEventListener("click", async () => {
  $("error").textContent = ""; $("result").hidden = true;
  const text = $("text").value;
  try {
    const p = (await call("/predict", {texts: [text]})).predictions[0];
    if (p.status !== "ok") throw new Error("the server could not score this text: " + p.status);
    $("words").replaceChildren(); $("probabilities").replaceChildren(); $("method").textContent = "";
    $("entities").replaceChildren();
    if (p.entities !== undefined) {
      $("label").textContent = p.entities.length + " entities";
      $("confidence").textContent = "";
      $("words").replaceChildren(...spans(text, p.entities));
      if (p.entities.length) {
        const found = (await call("/explain", {texts: [text]})).explanations;
        for (const e of found) {
          const line = document.createElement("p"), head = document.createElement("b");
          line.className = "entity";
          head.textContent = e.entity.type + " \u00ab" + e.entity.text + "\u00bb (" +
                             (100 * e.probability).toFixed(1) + "%): ";
          line.append(head, ...shade(e.words)); $("entities").append(line);
        }
        $("method").textContent = "Evidence for each entity (" + found[0].method + "): green for, red against; " +
                                  "hover a word for its score.";
      }
    } else {
      $("label").textContent = p.label;
      $("confidence").textContent = "(" + (100 * p.confidence).toFixed(1) + "%)";
      for (const [name, v] of Object.entries(p.probabilities)) {
        const tr = document.createElement("tr");
        tr.innerHTML = "<td></td><td></td>";
        tr.cells[0].textContent = name; tr.cells[1].textContent = (100 * v).toFixed(1) + "%";
        $("probabilities").append(tr);
      }
      const e = (await call("/explain", {texts: [text]})).explanations[0];
      $("words").replaceChildren(...shade(e.words));
      $("method").textContent = "Evidence for " + e.target + " (" + e.method + "): green for, red against; " +
                                "hover a word for its score.";
    }
    $("result").hidden = false;
  } catch (err) {
    $("error").textContent = err.message;
  }
});
</script>
</body></html>
"""


def page(model: str, kind: str, labels: list[str]) -> str:
    about = (f"Model <code>{html.escape(model)}</code> ({html.escape(kind)}); classes: "
             f"{html.escape(', '.join(labels))}. The same answers as POST /predict and POST /explain "
             "(OpenAPI at <a href=\"/docs\">/docs</a>).")
    return PAGE.replace("__TITLE__", "finetune-pipeline: try the model").replace("__ABOUT__", about)
