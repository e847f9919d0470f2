/* The annotator workbench: one clock for every video of the group, the keyboard flow, playback coverage.
   Dependency-free; htmx swaps each next group into #workbench and this file starts it on htmx:afterSwap (and on
   htmx:load / afterSettle, which find it started). */
(function () {
  "use strict";
  var BUCKETS = 50;
  var wb = null; // state of the current group

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  // -- the clock ------------------------------------------------------------------------------------------------------
  function Clock(videos, fps) {
    this.videos = videos; this.master = videos[0]; this.fps = fps || 25;
    this.playing = false; this.loop = true; this.rate = 1; this.seeking = false;
    this.coverage = videos.map(function () { return new Uint8Array(BUCKETS); });
    this.prev = videos.map(function () { return null; });
    var self = this;
    videos.forEach(function (v) { v.loop = false; v.muted = true; });
    this.master.addEventListener("ended", function () { self.onEnded(); });
    videos.forEach(function (v, i) {
      v.addEventListener("ended", function () { self.mark(i, self.prev[i] == null ? 0 : self.prev[i], self.duration()); });
    });
  }
  Clock.prototype.duration = function () {
    var d = 0;
    this.videos.forEach(function (v) { if (isFinite(v.duration) && v.duration > d) d = v.duration; });
    return d;
  };
  Clock.prototype.time = function () { return this.master.currentTime; };
  Clock.prototype.play = function () {
    var t = this.time(), self = this;
    if (this.duration() && t >= this.duration() - 0.5 / this.fps) t = 0;
    this.videos.forEach(function (v, i) { v.currentTime = t; v.playbackRate = self.rate; self.prev[i] = t; });
    this.playing = true;
    this.videos.forEach(function (v) { var p = v.play(); if (p && p.catch) p.catch(function () {}); });
    render();
  };
  Clock.prototype.pause = function () {
    this.playing = false;
    var self = this;
    this.videos.forEach(function (v) { v.pause(); });
    var t = this.time();
    this.videos.forEach(function (v, i) { if (v !== self.master) v.currentTime = t; self.prev[i] = null; });
    render();
  };
  Clock.prototype.toggle = function () { if (this.playing) this.pause(); else this.play(); };
  Clock.prototype.seek = function (t) {
    var d = this.duration();
    t = Math.max(0, d ? Math.min(t, d - 0.001) : t);
    var self = this;
    this.videos.forEach(function (v, i) { v.currentTime = t; self.prev[i] = null; });
    render();
  };
  Clock.prototype.step = function (frames) {
    if (this.playing) this.pause();
    // land in the middle of the target frame so every decoder shows the same one
    var frame = Math.floor(this.time() * this.fps + 1e-6) + frames;
    this.seek((Math.max(frame, 0) + 0.5) / this.fps);
  };
  Clock.prototype.setRate = function (r) {
    this.rate = r;
    this.videos.forEach(function (v) { v.playbackRate = r; });
    render();
  };
  Clock.prototype.onEnded = function () {
    if (this.loop && this.playing) { this.seek(0); this.play(); } else { this.pause(); }
  };
  Clock.prototype.mark = function (i, a, b) {
    var d = this.duration();
    if (!d || b <= a) return;
    var from = Math.floor((a / d) * BUCKETS), to = Math.min(BUCKETS - 1, Math.ceil((b / d) * BUCKETS) - 1);
    for (var k = Math.max(from, 0); k <= to; k++) this.coverage[i][k] = 1;
  };
  Clock.prototype.coverageOf = function (i) {
    var s = 0; for (var k = 0; k < BUCKETS; k++) s += this.coverage[i][k];
    return s / BUCKETS;
  };
  Clock.prototype.tick = function () {
    var self = this, t0 = this.time(), frame = 1 / this.fps;
    if (this.playing) {
      this.videos.forEach(function (v, i) {
        // keep followers on the master clock: nudge the rate for small drift, jump for more than one frame
        if (v !== self.master) {
          var drift = v.currentTime - t0;
          if (Math.abs(drift) > frame) { v.currentTime = t0; }
          else { v.playbackRate = self.rate * (1 - Math.max(-0.1, Math.min(0.1, drift * 2))); }
        }
        var t = v.currentTime, p = self.prev[i];
        if (p != null && t > p && t - p < 0.5) self.mark(i, p, t);
        else if (p != null && t < p) { self.mark(i, p, self.duration()); self.mark(i, 0, t); }
        self.prev[i] = t;
      });
    }
  };

  // -- the page -------------------------------------------------------------------------------------------------------
  // Every lookup is scoped to the current form and stops once htmx removed it (a frame can run between the swap that
  // removes a group and the htmx:load of the next one).
  function live() { return wb && wb.form.isConnected; }
  function q(sel) { return wb.form.querySelector(sel); }
  function qa(sel) { return $all(sel, wb.form); }

  function render() {
    if (!live()) return;
    var c = wb.clock, d = c.duration(), t = c.time();
    var scrub = q("#scrub");
    if (scrub && !wb.scrubbing && d) scrub.value = Math.round((t / d) * 1000);
    var clock = q("#clock"); if (clock) clock.textContent = t.toFixed(2) + " s / " + d.toFixed(2) + " s";
    var play = q("#play"); if (play) play.textContent = c.playing ? "Pause" : "Play";
    var allPlayed = true;
    qa(".cand").forEach(function (el) {
      var pos = +el.dataset.pos, cov = c.coverageOf(pos), played = cov >= 0.9;
      el.classList.toggle("selected", pos === wb.selected);
      var input = q("#coverage-" + pos); if (input) input.value = cov.toFixed(3);
      var ans = q("#answer-" + pos); if (ans) ans.textContent = answerOf(pos);
      var seen = q("#seen-" + pos); if (seen) seen.textContent = played ? "played" : Math.round(cov * 100) + "% played";
      for (var k = 0; k < wb.segments; k++) {
        var cell = q("#seg-" + pos + "-" + k), v = q("#seg-input-" + pos + "-" + k).value;
        cell.classList.toggle("better", v === "preferred");
        cell.classList.toggle("worse", v === "non_preferred");
        cell.classList.toggle("current", k === currentSegment());
      }
      el.classList.toggle("played", played);
      if (!played) allPlayed = false;
    });
    // a refusal stays in sight only while it holds: clear it once every video was played or the answer changed
    if (wb.errorState && (wb.errorState !== stateKey() || (wb.errorPlayback && allPlayed))) clearError();
    var outcome = q("#outcome").value, status = q("#status");
    var names = { labelled: "your labels", all_good: "all equally good", all_bad: "all bad", skipped: "skip" };
    if (status) status.textContent = "Answer: " + names[outcome];
    wb.form.dataset.outcome = outcome;
  }
  function stateKey() {
    // what the annotator answered (labels, ranks, outcome, reason, flaws): a change means the refusal may not apply
    return qa("input:checked, input[name^=rank_], input[name^=segment_], #outcome, #skip-reason, .flaw-time").map(function (i) {
      return i.name + "=" + i.value;
    }).join("&");
  }
  function clearError() {
    var box = q("#submit-error"); if (box) box.innerHTML = "";
    wb.errorState = null; wb.errorPlayback = false;
  }
  function overallOf(pos) {
    if (wb.mode === "ranking") { var r = q("#rank-" + pos); return r && r.value ? "rank " + r.value : "unranked"; }
    var checked = q("input[name=label_" + pos + "]:checked");
    var v = checked ? checked.value : "neutral";
    if (wb.mode === "best_worst") return { preferred: "best", non_preferred: "worst", neutral: "–" }[v];
    return v.replace("_", "-");
  }
  function answerOf(pos) {
    // the overall answer, then each aspect marked better (▲) or worse (▼) than the others
    var marks = wb.aspects.map(function (a) {
      var checked = q("input[name=aspect_" + a + "_" + pos + "]:checked"), v = checked ? checked.value : "neutral";
      return v === "neutral" ? "" : a.toUpperCase() + (v === "preferred" ? " ▲" : " ▼");
    }).filter(Boolean);
    return [overallOf(pos)].concat(marks).join(" · ");
  }
  function currentSegment() {
    return Math.min(wb.segments - 1, Math.floor(wb.clock.time() / wb.segmentSeconds + 1e-6));
  }
  function segment(pos, k, value) {
    // one segment of one video: better / worse than the others there; the same again returns it to "same"
    var input = q("#seg-input-" + pos + "-" + k);
    if (!input) return false;
    input.value = input.value === value ? "neutral" : value;
    render();
    return true;
  }
  function aspect(name, value) {
    // the selected video's label on one aspect; the same key again returns it to "same"
    var pos = wb.selected;
    if (pos == null || wb.aspects.indexOf(name) < 0) return false;
    var radio = q("input[name=aspect_" + name + "_" + pos + "][value=" + value + "]");
    if (!radio) return false;
    if (radio.checked) radio = q("input[name=aspect_" + name + "_" + pos + "][value=neutral]");
    radio.checked = true;
    render();
    return true;
  }
  function setOutcome(o) {
    q("#outcome").value = o;
    if (o !== "labelled") {
      // a tie or "all bad" clears the overall labels; a skip clears the aspects and segments too (no judgment)
      qa(o === "skipped" ? "input[type=radio][value=neutral]" : "input[type=radio][name^=label_][value=neutral]")
        .forEach(function (r) { r.checked = true; });
      if (o === "skipped") qa("input[name^=segment_]").forEach(function (i) { i.value = "neutral"; });
      qa("input[name^=rank_]").forEach(function (r) { r.value = ""; });
    }
    if (o === "skipped") q("#skip-reason").focus();
    render();
  }
  function label(value) {
    var pos = wb.selected;
    if (pos == null) return;
    q("#outcome").value = "labelled";
    if (wb.mode === "ranking") {
      var input = q("#rank-" + pos);
      if (value === "neutral") { input.value = ""; }
      else if (value === "preferred" && !input.value) {
        var used = qa("input[name^=rank_]").map(function (r) { return +r.value || 0; });
        input.value = Math.max.apply(null, used.concat([0])) + 1;
      } else if (value === "non_preferred") {
        input.value = wb.count;
      }
    } else {
      if (wb.mode === "best_worst" && value !== "neutral") {
        qa("input[type=radio][name^=label_][value=" + value + "]:checked").forEach(function (r) {
          q("#neutral-" + r.name.split("_")[1]).checked = true;
        });
      }
      var radio = q("input[name=label_" + pos + "][value=" + value + "]");
      if (radio) radio.checked = true;
    }
    render();
  }
  function select(pos) {
    if (pos < 0 || pos >= wb.count) return;
    wb.selected = pos;
    render();
  }
  function enlarge(pos) {
    if (pos == null) pos = wb.selected;
    if (pos == null) return;
    var el = q("#cand-" + pos), on = !el.classList.contains("enlarged");
    qa(".cand").forEach(function (c) { c.classList.remove("enlarged"); });
    el.classList.toggle("enlarged", on);
    q("#grid").classList.toggle("has-enlarged", on);
  }
  function speed(delta) {
    var sel = q("#speed"), i = sel.selectedIndex + delta;
    if (i < 0 || i >= sel.options.length) return;
    sel.selectedIndex = i;
    wb.clock.setRate(parseFloat(sel.value));
  }
  function pin(row) {
    // the current time goes to this tag (and ticks it): flaw times are per tag
    var box = $("input[type=checkbox]", row), time = $(".flaw-time", row);
    box.checked = true;
    time.value = wb.clock.time().toFixed(2);
    render();
  }
  function openFlaws(pos) {
    var d = q("#flaws-" + pos); if (!d) return;
    d.open = true;
    var first = $("input[type=checkbox]", d); if (first) first.focus();
  }
  function closeFlaws(d) {
    d.open = false;
    focusPage(+d.dataset.pos);
  }
  function focusPage(pos) {
    // the keys act on the page again (not on a field of the form)
    var el = q("#cand-" + (pos == null ? wb.selected : pos)) || q("#grid");
    if (el) el.focus({ preventScroll: true });
  }
  function submit() {
    render();
    q("#time-spent").value = Math.round(performance.now() - wb.started);
    if (wb.form.requestSubmit) wb.form.requestSubmit(); else htmx.trigger(wb.form, "submit");
  }
  function teardown() {
    if (!wb) return;
    if (wb.raf) cancelAnimationFrame(wb.raf);
    wb.clock.videos.forEach(function (v) { v.pause(); });
    wb.clock.playing = false;
    wb = null;
    window.workbench = null;
  }

  function init() {
    var form = $("#group-form");
    if (!form) { teardown(); return; }
    if (wb && wb.form === form) return;
    teardown();
    var videos = $all("video.clip", form);
    var fps = parseFloat($(".cand", form).dataset.fps) || 25;
    wb = { form: form, mode: form.dataset.mode, count: +form.dataset.count, selected: 0,
           aspects: (form.dataset.aspects || "").split(",").filter(Boolean),
           segments: +form.dataset.segments || 0, segmentSeconds: parseFloat(form.dataset.segmentSeconds) || 1,
           clock: new Clock(videos, fps), started: performance.now(), scrubbing: false, raf: 0,
           errorState: null, errorPlayback: false };
    window.workbench = wb; // exposed for tests and debugging
    var aspectKeys = $("#aspect-keys"); if (aspectKeys) aspectKeys.hidden = !wb.aspects.length;
    var segmentKeys = $("#segment-keys"); if (segmentKeys) segmentKeys.hidden = !wb.segments;
    // htmx keeps the focus on an element of the same id after a swap (the skip note, a flaw box): a new group
    // starts with the keys on the page, never inside a field of the previous answer
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    focusPage(0);
    form.addEventListener("htmx:configRequest", function () {
      q("#time-spent").value = Math.round(performance.now() - wb.started);
      render();
    });
    form.addEventListener("htmx:afterSwap", function (e) {
      // a refusal came back into #submit-error: remember what it refused, so it can be cleared when resolved
      if (e.target && e.target.id === "submit-error" && live()) {
        wb.errorState = stateKey();
        wb.errorPlayback = !!$("[data-error-playback]", e.target) || /play every video/i.test(e.target.textContent);
      }
    });
    var toast = q("#submit-error");  // a refusal sits over the videos' headers: a click puts it away
    if (toast) toast.addEventListener("click", function () { clearError(); focusPage(); });
    form.addEventListener("change", function (e) {
      if (e.target.name && (e.target.name.indexOf("label_") === 0 || e.target.name.indexOf("rank_") === 0)) q("#outcome").value = "labelled";
      if (e.target.id === "skip-reason" && e.target.value) q("#outcome").value = "skipped";
      render();
    });
    form.addEventListener("focusin", function (e) {
      // tabbing into a video's controls selects that video, so the keys and the legend agree
      var cand = e.target.closest && e.target.closest(".cand");
      if (cand && +cand.dataset.pos !== wb.selected) select(+cand.dataset.pos);
    });
    form.addEventListener("click", function (e) {
      var b = e.target.closest("[data-action]");
      if (!b) return;
      var a = b.dataset.action;
      if (a === "toggle") wb.clock.toggle();
      else if (a === "step") wb.clock.step(+b.dataset.frames);
      else if (a === "enlarge") enlarge(+b.dataset.pos);
      else if (a === "outcome") setOutcome(b.dataset.outcome);
      else if (a === "pin") pin(b.closest(".flaw-row"));
      else if (a === "segment") {  // a click cycles the segment: same -> better -> worse -> same
        var input = q("#seg-input-" + b.dataset.pos + "-" + b.dataset.seg);
        input.value = { neutral: "preferred", preferred: "non_preferred" }[input.value] || "neutral";
        select(+b.dataset.pos);
        focusPage(+b.dataset.pos);  // the keys (Enter included) act on the page again, not on this button
      }
    });
    var scrub = q("#scrub");
    scrub.addEventListener("input", function () { wb.scrubbing = true; wb.clock.seek((scrub.value / 1000) * wb.clock.duration()); });
    scrub.addEventListener("change", function () { wb.scrubbing = false; });
    q("#speed").addEventListener("change", function (e) { wb.clock.setRate(parseFloat(e.target.value)); });
    q("#loop").addEventListener("change", function (e) { wb.clock.loop = e.target.checked; });
    var ready = 0;
    videos.forEach(function (v) {
      var go = function () { if (++ready === videos.length && live()) { wb.clock.play(); } };
      if (v.readyState >= 1) go(); else v.addEventListener("loadedmetadata", go, { once: true });
    });
    var loop = function () {
      if (!wb || wb.form !== form) return;
      if (!form.isConnected) { teardown(); return; }
      wb.clock.tick(); render(); wb.raf = requestAnimationFrame(loop);
    };
    wb.raf = requestAnimationFrame(loop);
    render();
  }

  // Keys. A focused button, link or summary keeps its own Enter and Space (it is pressed, nothing else happens); a
  // text field keeps its typing (Enter submits, Esc returns to the page); in a flaw panel Enter in a time field
  // returns to its tag, M pins the current time to the focused tag, Esc closes the panel.
  document.addEventListener("keydown", function (e) {
    if (!live() || e.ctrlKey || e.metaKey || e.altKey) return;
    if (!wb.form.contains(e.target) && e.target !== document.body) return;
    var tag = (e.target.tagName || "").toLowerCase(), k = e.key;
    var row = e.target.closest ? e.target.closest(".flaw-row") : null;
    var panel = e.target.closest ? e.target.closest("details.flaws") : null;
    var typing = tag === "textarea" || (tag === "input" && /^(text|number|search)$/.test(e.target.type));
    if (panel && k === "Escape") { e.preventDefault(); closeFlaws(panel); return; }
    if (typing || tag === "select") {
      if (k === "Enter" && row) { e.preventDefault(); $("input[type=checkbox]", row).focus(); }
      else if (k === "Enter") { e.preventDefault(); submit(); }
      else if (k === "Escape") { e.preventDefault(); focusPage(); }
      return;
    }
    if ((k === "Enter" || k === " ") && (tag === "button" || tag === "summary" || tag === "a")) return;
    if (k === " " && tag === "input") return; // space toggles a focused checkbox or radio
    var handled = true;
    var aspectKey = { v: "vq", m: "mq", a: "ta" }[k.toLowerCase()];
    if (row && (k === "m" || k === "M")) pin(row);
    else if (aspectKey && aspect(aspectKey, k === k.toLowerCase() ? "preferred" : "non_preferred")) { /* handled */ }
    else if ((k === "g" || k === "G") && wb.segments && wb.selected != null) {
      segment(wb.selected, currentSegment(), k === "g" ? "preferred" : "non_preferred");
    }
    else if (/^[1-9]$/.test(k)) select(+k - 1);
    else if (k === "p" || k === "P" || k === "ArrowUp") label("preferred");
    else if (k === "n" || k === "N" || k === "ArrowDown") label("non_preferred");
    else if (k === "u" || k === "U" || k === "0") label("neutral");
    else if (k === "t" || k === "T") setOutcome("all_good");
    else if (k === "b" || k === "B") setOutcome("all_bad");
    else if (k === "s" || k === "S") setOutcome("skipped");
    else if (k === "Enter") submit();
    else if (k === " ") wb.clock.toggle();
    else if (k === ",") wb.clock.step(-1);
    else if (k === ".") wb.clock.step(1);
    else if (k === "ArrowLeft") wb.clock.seek(wb.clock.time() - 1);
    else if (k === "ArrowRight") wb.clock.seek(wb.clock.time() + 1);
    else if (k === "[") speed(-1);
    else if (k === "]") speed(1);
    else if (k === "l" || k === "L") { var lp = q("#loop"); lp.checked = !lp.checked; wb.clock.loop = lp.checked; }
    else if (k === "e" || k === "E") enlarge();
    else if (k === "f" || k === "F") openFlaws(wb.selected);
    else if (k === "Escape") focusPage();
    else handled = false;
    if (handled) e.preventDefault();
  });
  document.addEventListener("htmx:beforeSwap", function (e) {
    // the group is about to be replaced (next group, nothing to judge, paused): stop its clock first
    if (live() && e.detail && e.detail.target && (e.detail.target.id === "workbench" || e.detail.target === document.body)) teardown();
  });
  document.addEventListener("DOMContentLoaded", init);
  // start a swapped-in group at once: htmx's load / settle events come a settle delay later, and a key pressed in
  // between was lost (the new group shows the old one's classes until it settles)
  document.addEventListener("htmx:afterSwap", init);
  document.addEventListener("htmx:load", init);
  document.addEventListener("htmx:afterSettle", init);
})();
