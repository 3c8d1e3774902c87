// Signs a user in through the hosted login page in Debian's Chromium (playwright-core, never a
// downloaded browser) and prints where the page sent the browser back to. Driven by
// oidc_client.py; reads its task as JSON on stdin:
//   { url, redirect_uri, email, password, totp?: code, cancel?: bool }
// and prints { callback, titles, csp_violations } as JSON on stdout. The browser's request to the
// redirect URI is watched for: nothing needs to listen there.
import { readTask, withChromium } from "./chromium.mjs";

const task = await readTask();
await withChromium("login.mjs", 60, async (browser) => {
  // The gateway's certificate is signed by the test constellation's own CA.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const titles = [];
  const cspViolations = [];
  const console_ = [];
  page.on("console", (m) => {
    console_.push(m.text());
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  page.on("requestfailed", (r) => console_.push(`failed: ${r.url()} ${r.failure()?.errorText}`));
  let callback = null;
  // The browser is sent to the redirect URI, where nothing listens: the request is what counts.
  page.on("request", (r) => { if (r.url().startsWith(task.redirect_uri)) callback = r.url(); });
  await page.goto(task.url);
  titles.push(await page.title());
  await page.getByLabel("Email address").fill(task.email);
  await page.getByLabel("Password").fill(task.password);
  if (task.cancel) {
    await page.getByRole("button", { name: "Cancel" }).click();
  } else {
    await page.locator("button[value=allow]").click();
  }
  await page.waitForLoadState();
  if (!callback && task.totp) {
    titles.push(await page.title());
    await page.getByLabel("Code").fill(task.totp);
    await page.getByRole("button", { name: "Verify" }).click();
    await page.waitForLoadState();
  }
  if (!callback) {
    titles.push(await page.title());
    const error = await page.locator("#error, #message").allTextContents();
    throw new Error(`not sent back to the client: ${page.url()} ${error.join(" ")} ${console_.join(" | ")}`);
  }
  process.stdout.write(JSON.stringify({ callback, titles, csp_violations: cspViolations }));
});
