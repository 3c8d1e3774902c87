// The hosted login pages checked by axe-core (WCAG 2 A and AA rules) in Debian's Chromium: the
// sign-in form (with its consent list), the second-factor step, TOTP enrolment, and an error page.
// Driven by e2e/tests/e2e/hosted_login.rs; reads its task as JSON on stdin:
//   { authorize_url, error_url, totp_user: {email, password}, enrolling_user: {email, password} }
// and prints, per page, the serious and critical violations (none expected) as JSON.
import { createRequire } from "node:module";
import { readTask, withChromium } from "./chromium.mjs";

const axe = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
const task = await readTask();
await withChromium("a11y.mjs", 90, async (browser) => {
  // axe is injected into the page: the pages' CSP (rightly) allows no such script.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, bypassCSP: true });
  const page = await context.newPage();
  const check = async () => {
    await page.addScriptTag({ path: axe });
    const result = await page.evaluate(() => axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "best-practice"] }));
    return {
      title: await page.title(),
      violations: result.violations
        .filter((v) => v.impact === "serious" || v.impact === "critical")
        .map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.html) })),
      passes: result.passes.length,
    };
  };
  const signIn = async (user) => {
    await page.goto(task.authorize_url);
    await page.getByLabel("Email address").fill(user.email);
    await page.getByLabel("Password").fill(user.password);
    const posted = page.waitForEvent("framenavigated");
    await page.keyboard.press("Enter"); // the keyboard reaches the default action
    await posted;
    await page.waitForLoadState();
  };
  const report = {};
  await page.goto(task.authorize_url);
  report.sign_in = await check();
  await page.goto(task.error_url);
  report.error = await check();
  await signIn(task.totp_user);
  report.second_factor = await check();
  await signIn(task.enrolling_user);
  report.enrolment = await check();
  process.stdout.write(JSON.stringify(report));
});
