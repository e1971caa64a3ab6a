// Debian's headless Chromium for the browser drivers, with the flags this machine's closed
// network needs (without the background-networking ones it keeps trying Google's hosts).
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.STAGECAST_CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}
