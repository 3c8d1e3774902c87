// A single-page app on its own origin (e2e/browser/spa, with oidc-client-ts, served by the test)
// signs a user in through a tenant's hosted login page in Debian's Chromium, renews with the
// refresh token, revokes it and signs out (RP-initiated logout). Driven by
// e2e/tests/e2e/hosted_login.rs; reads its task as JSON on stdin:
//   { app, email, password }
// and prints what the app saw as JSON. The app's calls to the provider are cross-origin (CORS).
import { readTask, withChromium } from "./chromium.mjs";

const task = await readTask();
await withChromium("spa.mjs", 90, async (browser) => {
  // The gateway's certificate is the test CA's.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const console_ = [];
  page.on("console", (m) => console_.push(m.text()));
  await page.goto(`${task.app}/`);
  // Navigates away: not awaited inside the page.
  await page.evaluate(() => { window.app.signIn(); });
  await page.waitForURL((u) => u.pathname.endsWith("/oauth/authorize"));
  await page.waitForLoadState();
  if (await page.getByLabel("Email address").count() === 0) {
    const shown = (await page.content()).slice(0, 1500);
    throw new Error(`no sign-in form at ${page.url()}: ${shown}`);
  }
  await page.getByLabel("Email address").fill(task.email);
  await page.getByLabel("Password").fill(task.password);
  await page.locator("button[value=allow]").click();
  await page.waitForFunction(() => document.title === "signed-in" || document.title === "failed");
  const signedIn = JSON.parse(await page.locator("#result").textContent());
  if (document_failed(await page.title())) throw new Error(`sign-in failed: ${JSON.stringify(signedIn)} ${console_.join(" | ")}`);
  const renewed = await page.evaluate(() => window.app.renew());
  await page.evaluate(() => window.app.revoke());
  await page.evaluate(() => { window.app.signOut(); });
  await page.waitForURL((u) => u.href === `${task.app}/` || u.href.startsWith(`${task.app}/?`));
  process.stdout.write(JSON.stringify({ signed_in: signedIn, renewed, signed_out_at: page.url() }));
});

function document_failed(title) {
  return title !== "signed-in";
}
