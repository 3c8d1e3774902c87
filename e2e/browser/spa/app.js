// A single-page app as docs/identity.md tells one to integrate: oidc-client-ts on its own origin,
// tokens in memory (sessionStorage only for the redirect's state), the code flow with PKCE. Its
// configuration (window.config: authority, client_id) is served by the test. It exposes
// `window.app` for the driver (e2e/browser/spa.mjs) and writes each outcome into the page.
"use strict";
window.app = (() => {
  const origin = window.location.origin;
  const manager = new oidc.UserManager({
    authority: window.config.authority,
    client_id: window.config.client_id,
    redirect_uri: `${origin}/callback`,
    post_logout_redirect_uri: `${origin}/`,
    scope: "openid email profile offline_access",
    response_type: "code",
    loadUserInfo: true,
    automaticSilentRenew: false,
    userStore: new oidc.WebStorageStateStore({ store: new oidc.InMemoryWebStorage() }),
    stateStore: new oidc.WebStorageStateStore({ store: window.sessionStorage }),
  });
  const show = (title, result) => {
    document.getElementById("result").textContent = JSON.stringify(result);
    document.title = title;
  };
  const summary = (user) => ({
    sub: user.profile.sub,
    email: user.profile.email,
    amr: user.profile.amr,
    scope: user.scope,
    has_refresh_token: Boolean(user.refresh_token),
    access_token: user.access_token,
    id_token: user.id_token,
  });
  window.addEventListener("DOMContentLoaded", () => {
    if (window.location.pathname === "/callback") {
      manager.signinRedirectCallback().then(
        (user) => show("signed-in", summary(user)),
        (e) => show("failed", { error: String(e) }),
      );
    }
  });
  return {
    signIn: () => manager.signinRedirect(),
    // The refresh grant (oidc-client-ts renews with the refresh token when it has one).
    renew: async () => summary(await manager.signinSilent()),
    revoke: () => manager.revokeTokens(["refresh_token"]),
    signOut: () => manager.signoutRedirect(),
  };
})();
