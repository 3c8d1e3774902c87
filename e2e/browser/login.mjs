// Signs a user in through the hosted login page in Debian's Chromium (playwright-core, never a
// downloaded browser) and prints where the page sent the browser back to. Driven by
// oidc_client.py; reads its task as JSON on stdin:
//   { url, redirect_uri, email, password, totp?: code, cancel?: bool }
// and prints { callback, titles, csp_violations } as JSON on stdout. The browser's request to the
// redirect URI is watched for: nothing needs to listen there.
import { chromium } from "playwright-core";

const task = JSON.parse(await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (c) => (data += c));
  process.stdin.on("end", () => resolve(data));
}));

const browser = await chromium.launch({
  executablePath: process.env.STRONGROOM_CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const bounded = setTimeout(() => { console.error("login.mjs: timed out"); process.exit(2); }, 60_000);
try {
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
} finally {
  clearTimeout(bounded);
  await browser.close();
}
