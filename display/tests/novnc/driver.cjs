// Drives noVNC in headless Chromium for display/tests/novnc.rs, over the DevTools
// protocol through puppeteer-core.
//
//   node driver.cjs MODULES CHROMIUM VNC_PORT PROFILE_DIR PID_FILE [OPTIONS]
//
// OPTIONS (display/benches/novnc.rs) is a query string added to the page's: its
// encoding= and count= (page.html), and viewport=WxH for the page's size (1024x768).
//
// MODULES is the node_modules folder with @novnc/novnc and puppeteer-core
// (resources/scripts/novnc-assets.sh). The script serves page.html and noVNC's files on a
// free loopback port (ES modules do not load from file://), opens the page with
// ?port=VNC_PORT (Chromium's pid into PID_FILE first: puppeteer starts it in a process
// group of its own, which the test ends if this script does not), waits for noVNC's connect event and prints "connected X Y" (the canvas's
// place on the page). Then it takes one command a line on stdin and answers one line:
//   canvas FILE   the canvas's pixels as RGBA into FILE  -> "canvas W H"
//   type TEXT     keys typed into the focused page        -> "typed"
//   press KEY     a key pressed and released (puppeteer's key names: Enter, KeyV...)
//   down KEY / up KEY                                     -> "pressed" / "down" / "up"
//   click X Y     a left click at page coordinates        -> "clicked"
//   shot FILE     a PNG screenshot of the page            -> "shot"
//   count         the page's counts (count=1)             -> "count UPDATES PAINTED"
//   quit          closes Chromium and exits 0
// Anything that fails prints "error: ..." on stderr and exits 1.
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');
const readline = require('readline');

const [modules, chromium, vncPort, profile, pidFile, options = ''] = process.argv.slice(2);
const [viewWidth, viewHeight] = (new URLSearchParams(options).get('viewport') || '1024x768')
  .split('x').map(Number);
const puppeteer = require(path.join(modules, 'puppeteer-core'));
const novncRoot = path.join(modules, '@novnc', 'novnc');

const types = { '.js': 'text/javascript', '.html': 'text/html', '.json': 'application/json' };

// The page at /, noVNC's files under /novnc/, nothing else.
function serve(req, res) {
  const url = new URL(req.url, 'http://localhost');
  let file;
  if (url.pathname === '/') {
    file = path.join(__dirname, 'page.html');
  } else if (url.pathname.startsWith('/novnc/')) {
    file = path.join(novncRoot, path.normalize(url.pathname.slice('/novnc/'.length)));
    if (!file.startsWith(novncRoot + path.sep)) file = null;
  }
  fs.readFile(file || '', (err, data) => {
    if (err || !file) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { 'Content-Type': types[path.extname(file)] || 'application/octet-stream' });
    res.end(data);
  });
}

async function main() {
  const server = http.createServer(serve);
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    userDataDir: profile,
    // As root Chromium needs --no-sandbox. The rest keeps it off the network it has no
    // business with (updates, sync, Google's hosts), which a closed network refuses.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    // With OPTIONS (a benchmark), puppeteer does not follow the page's network: it would
    // have Chromium copy every WebSocket frame to this script over the DevTools protocol.
    networkEnabled: !options,
  });
  try {
    fs.writeFileSync(pidFile, String(browser.process().pid));
    const page = await browser.newPage();
    page.on('console', (m) => process.stderr.write(`page: ${m.text()}\n`));
    page.on('pageerror', (e) => process.stderr.write(`page error: ${e.message}\n`));
    await page.setViewport({ width: viewWidth, height: viewHeight });
    const extra = options ? `&${options}` : '';
    await page.goto(`http://127.0.0.1:${server.address().port}/?port=${vncPort}${extra}`);
    // Until the page's module has run, novncState is not there at all.
    await page.waitForFunction(
      () => window.novncState && window.novncState !== 'connecting',
      { timeout: 60000 },
    );
    const state = await page.evaluate(() => window.novncState);
    if (state !== 'connected') throw new Error(`noVNC: ${state}`);
    const at = await page.evaluate(() => {
      const r = document.querySelector('#screen canvas').getBoundingClientRect();
      return `${Math.round(r.left)} ${Math.round(r.top)}`;
    });
    console.log(`connected ${at}`);
    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
      const [cmd, ...rest] = line.split(' ');
      const arg = rest.join(' ');
      if (cmd === 'canvas') {
        const { w, h, b64 } = await page.evaluate(() => {
          const c = document.querySelector('#screen canvas');
          const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let s = '';
          for (let i = 0; i < px.length; i += 0x8000) {
            s += String.fromCharCode.apply(null, px.subarray(i, i + 0x8000));
          }
          return { w: c.width, h: c.height, b64: btoa(s) };
        });
        fs.writeFileSync(arg, Buffer.from(b64, 'base64'));
        console.log(`canvas ${w} ${h}`);
      } else if (cmd === 'type') {
        await page.evaluate(() => window.rfb.focus());
        await page.keyboard.type(arg);
        console.log('typed');
      } else if (cmd === 'press' || cmd === 'down' || cmd === 'up') {
        await page.evaluate(() => window.rfb.focus());
        await page.keyboard[cmd](arg);
        console.log(cmd === 'press' ? 'pressed' : cmd);
      } else if (cmd === 'click') {
        const [x, y] = rest.map(Number);
        await page.mouse.click(x, y);
        console.log('clicked');
      } else if (cmd === 'shot') {
        await page.screenshot({ path: arg });
        console.log('shot');
      } else if (cmd === 'count') {
        const c = await page.evaluate(() => window.novncCount);
        if (!c) throw new Error('the page counts nothing (count=1 not given)');
        console.log(`count ${c.updates} ${c.painted}`);
      } else if (cmd === 'quit') {
        break;
      } else {
        throw new Error(`unknown command ${line}`);
      }
    }
  } finally {
    await browser.close();
    server.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`error: ${e.stack || e}\n`);
    process.exit(1);
  },
);
