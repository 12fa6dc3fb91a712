// netra console: the little JavaScript the pages need. Every request it
// sends carries the page's form token; nothing is loaded from elsewhere.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

  // Counts per status on the runs page refresh by themselves.
  const counts = document.getElementById("counts");
  if (counts) {
    setInterval(async () => {
      try {
        const r = await fetch("/console/counts" + location.search, { credentials: "same-origin" });
        if (r.ok) counts.innerHTML = await r.text();
      } catch (_) { /* the next tick tries again */ }
    }, 3000);
  }

  // "Replay selected" on the runs page: the checked rows' run ids.
  const selected = document.getElementById("replay-selected");
  if (selected) {
    document.getElementById("select-all")?.addEventListener("change", (e) => {
      document.querySelectorAll("input.pick").forEach((c) => { c.checked = e.target.checked; });
    });
    selected.addEventListener("submit", (e) => {
      const ids = [...document.querySelectorAll("input.pick:checked")].map((c) => c.value);
      if (ids.length === 0) { e.preventDefault(); alert("Select at least one dead-lettered run."); return; }
      document.getElementById("selected-runs").value = ids.join(",");
    });
  }

  // The patch editor: validates the JSON merge patch and shows the patched
  // inputs (computed by the server, changing nothing) before any replay.
  const editor = document.getElementById("patch");
  if (editor) {
    const out = document.getElementById("patched");
    const msg = document.getElementById("patch-message");
    const button = document.getElementById("replay-patched");
    const check = async () => {
      let patch;
      try {
        patch = editor.value.trim() === "" ? {} : JSON.parse(editor.value);
      } catch (e) {
        msg.textContent = "Not JSON: " + e.message;
        msg.className = "error";
        button.disabled = true;
        return;
      }
      const r = await fetch(editor.dataset.preview, {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrf },
        body: JSON.stringify({ patch }),
      });
      const body = await r.json();
      if (r.ok) {
        msg.textContent = "Valid patch. The phase will run with these inputs:";
        msg.className = "ok";
        out.textContent = JSON.stringify(body.inputs, null, 2);
        button.disabled = false;
      } else {
        msg.textContent = body.error?.message || "invalid patch";
        msg.className = "error";
        out.textContent = "";
        button.disabled = true;
      }
    };
    document.getElementById("check-patch")?.addEventListener("click", (e) => { e.preventDefault(); check(); });
    editor.addEventListener("input", () => { button.disabled = true; msg.textContent = "Check the patch to see the patched inputs."; msg.className = "muted"; });
  }

  // A replay job's live progress, until it ends.
  const job = document.getElementById("job");
  if (job) {
    const tick = async () => {
      try {
        const r = await fetch(job.dataset.progress, { credentials: "same-origin" });
        if (r.ok) {
          const j = await r.json();
          document.getElementById("job-bar").value = j.done;
          document.getElementById("job-bar").max = Math.max(j.total, 1);
          document.getElementById("job-done").textContent = j.done + " / " + j.total;
          document.getElementById("job-state").textContent = j.state;
          document.getElementById("job-state").className = "status status-" + j.state;
          document.getElementById("job-replayed").textContent = j.replayed;
          document.getElementById("job-skipped").textContent = j.skipped;
          document.getElementById("job-runs").innerHTML = j.runs_html;
          if (j.state !== "running") {
            document.getElementById("abort-form")?.remove();
            return;
          }
        }
      } catch (_) { /* try again */ }
      setTimeout(tick, 1000);
    };
    tick();
  }
})();
