/* The wallet's voucher screen: fetch a voucher, show its QR code with a countdown, and fetch a fresh one
   shortly before it expires (the server's clock decides: the countdown runs from its seconds_left). */
(function () {
  "use strict";
  var root = document.getElementById("voucher");
  if (!root || root.dataset.available !== "true") { return; }
  var image = document.getElementById("qr");
  var countdown = document.getElementById("countdown");
  var errorBox = document.getElementById("voucher-error");
  var renewButton = document.getElementById("renew");
  var RENEW_BEFORE_SECONDS = 15;
  // After this many renewals in a row without a tap, stop (a forgotten open phone should not mint vouchers all day).
  var MAX_AUTOMATIC_RENEWALS = 12;
  var renewals = 0;
  var deadline = 0;
  var timer = null;
  var fetching = false;

  function show(element, visible) { element.classList.toggle("hidden", !visible); }

  function secondsLeft() { return Math.max(0, Math.round((deadline - performance.now()) / 1000)); }

  function format(seconds) {
    var m = Math.floor(seconds / 60);
    var s = seconds % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function fail(message) {
    clearInterval(timer);
    show(image, false);
    errorBox.textContent = message;
    show(errorBox, true);
    countdown.textContent = "";
  }

  function tick() {
    var left = secondsLeft();
    countdown.textContent = root.dataset.countdown.replace("{time}", format(left));
    if (left <= RENEW_BEFORE_SECONDS && !fetching) {
      if (renewals < MAX_AUTOMATIC_RENEWALS) {
        renewals += 1;
        fetchVoucher();
      } else if (left === 0) {
        clearInterval(timer);
        show(image, false);
        show(renewButton, true);
      }
    }
  }

  function fetchVoucher() {
    fetching = true;
    if (!deadline) { countdown.textContent = root.dataset.renewing; }
    fetch(root.dataset.endpoint, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": root.dataset.csrf },
      body: JSON.stringify({ perk: root.dataset.perk })
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (answer) {
      fetching = false;
      if (!answer.ok) {
        fail(answer.body && answer.body.error ? answer.body.error.message : root.dataset.networkError);
        if (answer.body && answer.body.error) { errorBox.dataset.code = answer.body.error.code; }
        return;
      }
      var voucher = answer.body;
      image.src = voucher.qr_png;
      image.dataset.voucherId = voucher.id;
      show(image, true);
      show(errorBox, false);
      show(renewButton, false);
      deadline = performance.now() + voucher.seconds_left * 1000;
      clearInterval(timer);
      timer = setInterval(tick, 1000);
      tick();
    }, function () {
      fetching = false;
      fail(root.dataset.networkError);
      show(renewButton, true);
    });
  }

  renewButton.addEventListener("click", function () {
    renewals = 0;
    show(renewButton, false);
    fetchVoucher();
  });
  // Timers sleep while the phone is locked: on return, renew at once if the shown voucher is about to lapse.
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && deadline && secondsLeft() <= RENEW_BEFORE_SECONDS && !fetching) {
      renewals = 0;
      fetchVoucher();
    }
  });
  fetchVoucher();
})();
