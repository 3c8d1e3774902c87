// The hosted login page's passkey buttons (gateway/templates/hosted). Served from the gateway's
// origin (the pages' CSP allows this file and fetches to the same origin, nothing inline). The
// page works without it: the buttons stay hidden and the forms post as they are.
"use strict";
(() => {
  if (!window.PublicKeyCredential || !PublicKeyCredential.parseRequestOptionsFromJSON) return;
  for (const button of document.querySelectorAll("button[data-passkey]")) {
    const form = button.form;
    const status = document.getElementById("passkey-status");
    const login = button.dataset.passkey === "login";
    button.hidden = false;
    button.addEventListener("click", async () => {
      status.textContent = "";
      try {
        const body = login ? { tenant: form.dataset.tenant } : { mfa_token: form.elements.mfa_token.value };
        const started = await fetch(login ? "/v1/auth/passkey/options" : "/v1/auth/mfa/passkey/options", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        if (!started.ok) throw new Error(String(started.status));
        const { ceremony_id: ceremony, options } = await started.json();
        const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey);
        const credential = await navigator.credentials.get({ publicKey });
        form.elements.step.value = login ? "passkey" : "mfa_passkey";
        form.elements.ceremony_id.value = ceremony;
        form.elements.credential.value = JSON.stringify(credential.toJSON());
        form.submit();
      } catch (e) {
        status.textContent = status.dataset.failed;
      }
    });
  }
})();
