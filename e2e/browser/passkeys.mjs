// Passkeys in Debian's Chromium with its virtual authenticator (DevTools `WebAuthn` domain: a
// platform authenticator with resident keys and user verification), against the gateway's API from
// a page of its own origin, https://localhost:<port> (an IP address is no WebAuthn RP id). Driven
// by e2e/tests/e2e/passkeys.rs; reads its task as JSON on stdin:
//   { origin, tenant, email, password, access_token, authorize_url, redirect_uri }
// From the hosted login page (whose CSP lets its own origin be fetched) it registers a passkey for
// the signed-in user over the API, lists it, signs in without a password, signs in with the
// password and the passkey as second factor, steps up by passkey; then it uses the page's own
// passkey buttons, passwordless and as second factor, as a user would. Prints what each answered
// as JSON (the assertions too, for the test's replay and tamper attacks).
import { readTask, withChromium } from "./chromium.mjs";

const task = await readTask();
await withChromium("passkeys.mjs", 90, async (browser) => {
  // The test CA is not the browser's.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const cspViolations = [];
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  const callbacks = [];
  page.on("request", (r) => { if (r.url().startsWith(task.redirect_uri)) callbacks.push(r.url()); });
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2", transport: "internal", hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  await page.goto(task.authorize_url);
  const report = await page.evaluate(async (task) => {
    const api = async (method, path, body, token) => {
      const headers = { "content-type": "application/json" };
      if (token) headers.authorization = `Bearer ${token}`;
      const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await r.text();
      return { status: r.status, body: text ? JSON.parse(text) : null };
    };
    const create = async (options) =>
      (await navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey) })).toJSON();
    const get = async (options) =>
      (await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey) })).toJSON();
    const out = {};

    const start = await api("POST", "/v1/me/passkeys/options", undefined, task.access_token);
    out.registration_options = start.body.options;
    const credential = await create(start.body.options);
    out.registered = await api("POST", "/v1/me/passkeys", { ceremony_id: start.body.ceremony_id, credential, name: "Laptop" }, task.access_token);
    out.listed = await api("GET", "/v1/me/passkeys", undefined, task.access_token);

    // Passwordless: no user named, the authenticator offers its resident credential.
    const login = await api("POST", "/v1/auth/passkey/options", { tenant: task.tenant });
    out.login_options = login.body.options;
    const assertion = await get(login.body.options);
    out.login_assertion = assertion;
    out.login = await api("POST", "/v1/auth/passkey", { tenant: task.tenant, ceremony_id: login.body.ceremony_id, credential: assertion });

    // Password, then the passkey as second factor.
    const password = await api("POST", "/v1/auth/login", { tenant: task.tenant, email: task.email, password: task.password });
    out.password = password.body;
    const factor = await api("POST", "/v1/auth/mfa/passkey/options", { mfa_token: password.body.mfa_token });
    out.factor_assertion = await get(factor.body.options);
    out.second_factor = await api("POST", "/v1/auth/mfa/passkey", {
      mfa_token: password.body.mfa_token, ceremony_id: factor.body.ceremony_id, credential: out.factor_assertion,
    });

    // Step-up of the passwordless session.
    const token = out.login.body.access_token;
    const up = await api("POST", "/v1/auth/step-up/passkey/options", undefined, token);
    out.step_up = await api("POST", "/v1/auth/step-up/passkey", { ceremony_id: up.body.ceremony_id, credential: await get(up.body.options) }, token);
    return out;
  }, task);

  // The hosted page's own buttons: passwordless, then as the second factor after the password.
  await page.goto(task.authorize_url);
  await page.locator("#passkey").click();
  // Sent to the client's redirect URI (the test answers there).
  const atClient = (u) => u.href.startsWith(task.redirect_uri);
  await page.waitForURL(atClient);
  await page.goto(task.authorize_url);
  await page.getByLabel("Email address").fill(task.email);
  await page.getByLabel("Password").fill(task.password);
  await page.locator("button[value=allow]").click();
  await page.waitForLoadState();
  report.mfa_page_title = await page.title();
  await page.locator("#passkey").click();
  await page.waitForURL(atClient);
  report.hosted_callbacks = callbacks;
  report.csp_violations = cspViolations;
  process.stdout.write(JSON.stringify(report));
});
