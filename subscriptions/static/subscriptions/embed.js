/* Newsroom embeddable sign-up: optional. Without this script the form posts to
   /subscribe/embedded/ and the reader lands on our "check your inbox" page; with
   it, the form is sent to the JSON API (/api/v1/signups) and the answer shown in
   place. The page's origin must be in NEWSROOM_API_ALLOWED_ORIGINS either way. */
(function () {
  "use strict";

  function apiUrl(form) {
    return new URL("/api/v1/signups", form.action).href;
  }

  function browserZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    } catch (error) {
      return "UTC";
    }
  }

  function payload(form) {
    var data = new FormData(form);
    var zone = data.get("timezone");
    return {
      email: data.get("email") || "",
      topics: data.getAll("topic"),
      frequency: data.get("frequency") || "daily",
      alerts: (data.get("wants_alerts") || "yes") === "yes",
      // "UTC" is the no-script default; the browser knows the reader's zone.
      timezone: !zone || zone === "UTC" ? browserZone() : zone,
      digest_hour: parseInt(data.get("digest_hour") || "7", 10)
    };
  }

  function say(form, text, state) {
    var box = form.querySelector("[data-newsroom-status]");
    if (!box) {
      box = document.createElement("p");
      box.setAttribute("data-newsroom-status", "");
      form.appendChild(box);
    }
    box.setAttribute("role", state === "done" ? "status" : "alert");
    box.textContent = text;
    form.setAttribute("data-newsroom-state", state);
  }

  function messages(errors) {
    var parts = [];
    Object.keys(errors).forEach(function (field) {
      parts = parts.concat(errors[field]);
    });
    return parts.join(" ");
  }

  function submit(event) {
    var form = event.currentTarget;
    if (!window.fetch || !window.URL) {
      return; // the plain form post goes ahead
    }
    event.preventDefault();
    fetch(apiUrl(form), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload(form)),
      credentials: "omit"
    }).then(function (response) {
      return response.json().then(function (body) {
        if (response.status === 202) {
          say(form, "Check your inbox: we sent you a link to confirm your subscription.", "done");
        } else if (response.status === 429) {
          say(form, "Too many sign-ups from here. Please try again in an hour.", "error");
        } else if (body && body.errors) {
          say(form, messages(body.errors), "error");
        } else {
          form.submit();
        }
      });
    }).catch(function () {
      form.submit(); // API unreachable or blocked: the plain post still works
    });
  }

  document.querySelectorAll("form[data-newsroom-signup]").forEach(function (form) {
    form.addEventListener("submit", submit);
  });
})();
