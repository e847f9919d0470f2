/* Synchronized players for the gallery and the review page: every <video data-sync-video> inside an element with
   data-sync-player follows the first one (one clock: play, pause, scrub, frame steps, speed). Dependency-free;
   re-initialises after htmx swaps. The annotator's workbench has its own (workbench.js: coverage, keys). */
(function () {
  "use strict";
  function all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  function Player(root) {
    this.root = root;
    this.videos = all("video[data-sync-video]", root);
    this.master = this.videos[0];
    this.fps = parseFloat(root.dataset.fps) || 25;
    this.playing = false;
    var self = this;
    this.videos.forEach(function (v) { v.muted = true; v.loop = false; v.playsInline = true; });
    this.master.addEventListener("ended", function () { if (self.playing) { self.seek(0); self.play(); } });
    root.addEventListener("click", function (e) {
      var b = e.target.closest("[data-sync]");
      if (!b) return;
      if (b.dataset.sync === "toggle") self.toggle();
      else if (b.dataset.sync === "step") self.step(+b.dataset.frames);
    });
    var scrub = root.querySelector("[data-sync=scrub]"), speed = root.querySelector("[data-sync=speed]");
    if (scrub) scrub.addEventListener("input", function () { self.seek((scrub.value / 1000) * self.duration()); });
    if (speed) speed.addEventListener("change", function () { self.setRate(parseFloat(speed.value)); });
    var loop = function () { if (!root.isConnected) { self.pause(); return; } self.tick(); requestAnimationFrame(loop); };
    requestAnimationFrame(loop);
    root.syncPlayer = this; // for tests and debugging
  }
  Player.prototype.duration = function () {
    var d = 0; this.videos.forEach(function (v) { if (isFinite(v.duration) && v.duration > d) d = v.duration; }); return d;
  };
  Player.prototype.time = function () { return this.master.currentTime; };
  Player.prototype.play = function () {
    var t = this.time();
    if (this.duration() && t >= this.duration() - 0.5 / this.fps) t = 0;
    this.videos.forEach(function (v) { v.currentTime = t; var p = v.play(); if (p && p.catch) p.catch(function () {}); });
    this.playing = true; this.render();
  };
  Player.prototype.pause = function () {
    this.playing = false;
    var t = this.time(), m = this.master;
    this.videos.forEach(function (v) { v.pause(); if (v !== m) v.currentTime = t; });
    this.render();
  };
  Player.prototype.toggle = function () { if (this.playing) this.pause(); else this.play(); };
  Player.prototype.seek = function (t) {
    var d = this.duration(); t = Math.max(0, d ? Math.min(t, d - 0.001) : t);
    this.videos.forEach(function (v) { v.currentTime = t; }); this.render();
  };
  Player.prototype.step = function (frames) {
    if (this.playing) this.pause();
    var frame = Math.floor(this.time() * this.fps + 1e-6) + frames;
    this.seek((Math.max(frame, 0) + 0.5) / this.fps);
  };
  Player.prototype.setRate = function (r) { this.rate = r; this.videos.forEach(function (v) { v.playbackRate = r; }); };
  Player.prototype.tick = function () {
    if (this.playing) {
      var t0 = this.time(), frame = 1 / this.fps, rate = this.rate || 1, m = this.master;
      this.videos.forEach(function (v) {
        if (v === m) return;
        var drift = v.currentTime - t0;
        if (Math.abs(drift) > frame) v.currentTime = t0;
        else v.playbackRate = rate * (1 - Math.max(-0.1, Math.min(0.1, drift * 2)));
      });
    }
    this.render();
  };
  Player.prototype.render = function () {
    var d = this.duration(), t = this.time();
    var clock = this.root.querySelector("[data-sync=clock]"), scrub = this.root.querySelector("[data-sync=scrub]");
    var btn = this.root.querySelector("[data-sync=toggle]");
    if (clock) clock.textContent = t.toFixed(2) + " s / " + d.toFixed(2) + " s";
    if (scrub && d && document.activeElement !== scrub) scrub.value = Math.round((t / d) * 1000);
    if (btn) btn.textContent = this.playing ? "Pause" : "Play";
  };

  function init() {
    all("[data-sync-player]").forEach(function (root) {
      if (!root.syncPlayer && root.querySelector("video[data-sync-video]")) new Player(root);
    });
  }
  document.addEventListener("DOMContentLoaded", init);
  document.addEventListener("htmx:load", init);
})();
