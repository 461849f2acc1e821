// LabFleet stocktake: read QR labels with the phone's camera (vendored jsQR, offline) and count them through
// the page's own typed-tag form, so a scan and a typed tag are one path. Without a camera, a photo of a
// label is decoded by the same function. The page works without this script (type the tags).
"use strict";
(function () {
  // Scan about 6 frames a second: enough to catch a label held still, light on a phone's battery.
  var FRAME_MS = 160;
  // The same label seen again within this time is the same scan, not a second one.
  var REPEAT_MS = 4000;
  // Frames are scaled down to at most this width before decoding: a label fills much of the frame, and
  // jsQR's cost grows with the pixel count.
  var MAX_WIDTH = 800;

  var root = null, video = null, status = null, stream = null, timer = null;
  var canvas = document.createElement("canvas");
  var ctx = canvas.getContext("2d", { willReadFrequently: true });
  var last = "", lastAt = 0;

  function say(text) { if (status) { status.textContent = text || ""; } }

  // The decode function: pixels of a video frame or a picture -> the text a QR code carries, or null.
  function decodeSource(source, width, height) {
    if (!window.jsQR || !width || !height) { return null; }
    var scale = Math.min(1, MAX_WIDTH / width);
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
    var img = ctx.getImageData(0, 0, canvas.width, canvas.height);
    var found = window.jsQR(img.data, img.width, img.height, { inversionAttempts: "attemptBoth" });
    return found && found.data ? found.data : null;
  }
  window.labfleetDecode = decodeSource;

  function submit(code) {
    var now = Date.now();
    if (code === last && now - lastAt < REPEAT_MS) { return; }
    last = code; lastAt = now;
    var form = document.getElementById("scan-form");
    if (!form) { return; }
    form.querySelector("input[name=code]").value = code;
    if (navigator.vibrate) { navigator.vibrate(80); }
    form.requestSubmit();
  }

  function tick() {
    timer = null;
    if (!stream) { return; }
    if (video.readyState >= 2) {
      var code = decodeSource(video, video.videoWidth, video.videoHeight);
      if (code) { submit(code); }
    }
    timer = window.setTimeout(tick, FRAME_MS);
  }

  function stop() {
    if (stream) { stream.getTracks().forEach(function (t) { t.stop(); }); }
    stream = null;
    if (timer) { window.clearTimeout(timer); timer = null; }
    video.hidden = true;
    document.getElementById("camera-start").hidden = false;
    document.getElementById("camera-stop").hidden = true;
  }

  function start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      say(root.getAttribute("data-no-camera")); return;
    }
    navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false })
      .then(function (s) {
        stream = s;
        video.srcObject = s;
        video.hidden = false;
        document.getElementById("camera-start").hidden = true;
        document.getElementById("camera-stop").hidden = false;
        say(root.getAttribute("data-looking"));
        return video.play();
      })
      .then(function () { tick(); })
      .catch(function () { stop(); say(root.getAttribute("data-no-camera")); });
  }

  function readPhoto(ev) {
    var file = ev.target.files && ev.target.files[0];
    if (!file) { return; }
    var img = new Image();
    img.onload = function () {
      var code = decodeSource(img, img.naturalWidth, img.naturalHeight);
      URL.revokeObjectURL(img.src);
      ev.target.value = "";
      if (code) { last = ""; submit(code); } else { say(root.getAttribute("data-no-code")); }
    };
    img.src = URL.createObjectURL(file);
  }

  document.addEventListener("DOMContentLoaded", function () {
    root = document.getElementById("scanner");
    if (!root) { return; }
    video = document.getElementById("scan-video");
    status = document.getElementById("scan-status");
    document.getElementById("camera-start").addEventListener("click", start);
    document.getElementById("camera-stop").addEventListener("click", stop);
    document.getElementById("scan-photo").addEventListener("change", readPhoto);
    window.addEventListener("pagehide", stop);
  });
  // After a typed tag is counted, the field is ready for the next one (not while the camera scans: the
  // phone's keyboard would cover the picture).
  document.addEventListener("htmx:afterSwap", function () {
    var input = document.getElementById("code");
    if (input && !stream) { input.focus(); }
  });
})();
