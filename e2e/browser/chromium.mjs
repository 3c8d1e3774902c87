// What the browser drivers share: the task from stdin, and Debian's Chromium (never a downloaded
// browser) started as this machine needs it, with a deadline after which the driver gives up.
import { chromium } from "playwright-core";

/** The driver's task: JSON on stdin. */
export async function readTask() {
  const data = await new Promise((resolve) => {
    let text = "";
    process.stdin.on("data", (c) => (text += c));
    process.stdin.on("end", () => resolve(text));
  });
  return JSON.parse(data);
}

/** Runs `drive(browser)` in a fresh headless Chromium, closed afterwards; exits 2 after `seconds`. */
export async function withChromium(name, seconds, drive) {
  const browser = await chromium.launch({
    executablePath: process.env.STRONGROOM_CHROMIUM || "/usr/bin/chromium",
    // Without the background-networking flags Chromium keeps calling out of a closed network.
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const bounded = setTimeout(() => { console.error(`${name}: timed out`); process.exit(2); }, seconds * 1000);
  try {
    return await drive(browser);
  } finally {
    clearTimeout(bounded);
    await browser.close();
  }
}
