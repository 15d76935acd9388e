/* The scan page: read a voucher's QR code from the rear camera (BarcodeDetector where the browser has one,
   else the vendored jsQR), from an uploaded picture, or from a USB scanner that types it; then send it. */
(function () {
  "use strict";
  var root = document.getElementById("scanner");
  if (!root) { return; }
  var form = document.getElementById("scan-form");
  var field = document.getElementById("token");
  var video = document.getElementById("camera");
  var canvas = document.getElementById("frame-canvas");
  var status = document.getElementById("scan-status");
  var upload = document.getElementById("upload");
  var MAX_SIDE = 800;
  var stream = null;
  var detector = null;
  var decoderLoading = null;
  var busy = false;
  var sent = false;

  function say(text) { status.textContent = text; }

  function stopCamera() {
    if (stream) {
      stream.getTracks().forEach(function (track) { track.stop(); });
      stream = null;
    }
    root.classList.remove("live");
  }

  function send(text) {
    if (sent || !text) { return; }
    sent = true;
    stopCamera();
    field.value = text.trim();
    say(root.dataset.reading);
    form.submit();
  }

  function loadJsQR() {
    if (window.jsQR) { return Promise.resolve(window.jsQR); }
    if (!decoderLoading) {
      decoderLoading = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = root.dataset.decoder;
        script.onload = function () { resolve(window.jsQR); };
        script.onerror = reject;
        document.head.appendChild(script);
      });
    }
    return decoderLoading;
  }

  function makeDetector() {
    if (!("BarcodeDetector" in window)) { return Promise.resolve(null); }
    return window.BarcodeDetector.getSupportedFormats().then(function (formats) {
      return formats.indexOf("qr_code") >= 0 ? new window.BarcodeDetector({ formats: ["qr_code"] }) : null;
    }, function () { return null; });
  }

  // Resolves with the text of the first QR code in the picture, or null.
  function decode(source, width, height) {
    if (detector) {
      return detector.detect(source).then(function (codes) { return codes.length ? codes[0].rawValue : null; });
    }
    return loadJsQR().then(function (jsQR) {
      var scale = Math.min(1, MAX_SIDE / Math.max(width, height));
      var w = Math.max(1, Math.round(width * scale));
      var h = Math.max(1, Math.round(height * scale));
      canvas.width = w;
      canvas.height = h;
      var context = canvas.getContext("2d", { willReadFrequently: true });
      context.drawImage(source, 0, 0, w, h);
      var code = jsQR(context.getImageData(0, 0, w, h).data, w, h, { inversionAttempts: "attemptBoth" });
      return code ? code.data : null;
    });
  }

  function tick() {
    if (!stream || sent) { return; }
    if (!busy && video.readyState >= 2 && video.videoWidth) {
      busy = true;
      decode(video, video.videoWidth, video.videoHeight).then(function (text) {
        busy = false;
        send(text);
      }, function () { busy = false; });
    }
    setTimeout(tick, 120);
  }

  function startCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      say(root.dataset.noCamera);
      return;
    }
    navigator.mediaDevices.getUserMedia({ video: { facingMode: { ideal: "environment" } }, audio: false })
      .then(function (media) {
        stream = media;
        video.srcObject = media;
        return video.play();
      })
      .then(function () {
        root.classList.add("live");
        say(root.dataset.pointCamera);
        tick();
      })
      .catch(function () {
        stopCamera();
        say(root.dataset.noCamera);
      });
  }

  upload.addEventListener("change", function () {
    var file = upload.files && upload.files[0];
    if (!file) { return; }
    var url = URL.createObjectURL(file);
    var image = new Image();
    image.onload = function () {
      decode(image, image.naturalWidth, image.naturalHeight).then(function (text) {
        URL.revokeObjectURL(url);
        if (text) { send(text); } else { say(root.dataset.notFound); }
      }, function () { say(root.dataset.notFound); });
    };
    image.onerror = function () { say(root.dataset.notFound); };
    image.src = url;
  });

  // A USB scanner is a keyboard that types the code fast and presses Enter; catch it wherever the focus is.
  var typed = "";
  var lastKeyAt = 0;
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA")) { return; }
    var now = Date.now();
    if (now - lastKeyAt > 100) { typed = ""; }
    lastKeyAt = now;
    if (event.key === "Enter") {
      if (typed.length >= 20) {
        event.preventDefault();
        send(typed);
      }
      typed = "";
    } else if (event.key.length === 1) {
      typed += event.key;
    }
  });

  document.getElementById("camera-start").addEventListener("click", startCamera);
  window.addEventListener("pagehide", stopCamera);
  makeDetector().then(function (found) {
    detector = found;
    startCamera();
  });
})();
