#!/usr/bin/env node
/*
 * Plays one HLS or DASH URL in Debian's headless Chromium and prints one JSON line
 * saying how it went. The engine's end-to-end tests run this through
 * tests/browser/player.py; it can also be run by hand:
 *
 *   node play.mjs --url http://127.0.0.1:8080/hls/live/index.m3u8 \
 *     [--player hlsjs|shaka|dashjs|native] [--low-latency] [--min-time 5] \
 *     [--timeout 60] [--switch-level] [--clearkey KID:KEY[,KID:KEY]]
 *     [--licence-server URL] [--seek-back SECONDS]
 *
 * Exit status: 0 when playback went past --min-time seconds of played media
 * (and, with --switch-level, a forced level switch took effect), 1 when it
 * did not, 2 on a usage error. The browser never downloads anything of its
 * own: it is /usr/bin/chromium (or $CHROMIUM_PATH) with a fresh profile.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const PLAYERS = new Set(['hlsjs', 'shaka', 'dashjs', 'native']);
const LIBRARIES = {
  hlsjs: join(HERE, 'node_modules', 'hls.js', 'dist', 'hls.min.js'),
  shaka: join(HERE, 'node_modules', 'shaka-player', 'dist', 'shaka-player.compiled.js'),
  dashjs: join(HERE, 'node_modules', 'dashjs', 'dist', 'modern', 'umd', 'dash.all.min.js'),
};
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];
const POLL_MS = 250;

class UsageError extends Error {}

function parseArgs(argv) {
  const opts = {
    url: null,
    player: 'hlsjs',
    lowLatency: false,
    minTime: 5,
    timeout: 60,
    switchLevel: false,
    clearKeys: null,
    licenceServer: null,
  };
  const number = (name, value) => {
    const parsed = Number(value);
    if (!Number.isFinite(parsed) || parsed < 0) throw new UsageError(`${name} needs a non-negative number`);
    return parsed;
  };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${arg} needs a value`);
      i += 1;
      return argv[i];
    };
    switch (arg) {
      case '--url': opts.url = value(); break;
      case '--player': opts.player = value(); break;
      case '--low-latency': opts.lowLatency = true; break;
      case '--min-time': opts.minTime = number(arg, value()); break;
      case '--timeout': opts.timeout = number(arg, value()); break;
      case '--switch-level': opts.switchLevel = true; break;
      case '--clearkey': opts.clearKeys = parseClearKeys(value()); break;
      case '--licence-server': opts.licenceServer = value(); break;
      case '--seek-back': opts.seekBack = number(arg, value()); break;
      default: throw new UsageError(`unknown argument ${arg}`);
    }
  }
  if (!opts.url) throw new UsageError('--url is required');
  if (!PLAYERS.has(opts.player)) throw new UsageError(`--player must be one of ${[...PLAYERS].join(', ')}`);
  if (opts.clearKeys && opts.player !== 'shaka') throw new UsageError('--clearkey is supported with --player shaka only');
  if (opts.licenceServer && opts.player !== 'shaka') {
    throw new UsageError('--licence-server is supported with --player shaka only');
  }
  return opts;
}

// KID:KEY pairs, 32 hex digits each, comma-separated: Shaka's drm.clearKeys.
function parseClearKeys(text) {
  const keys = {};
  for (const pair of text.split(',')) {
    const match = /^([0-9a-fA-F]{32}):([0-9a-fA-F]{32})$/.exec(pair.trim());
    if (!match) throw new UsageError('--clearkey wants KID:KEY with 32 hex digits each');
    keys[match[1].toLowerCase()] = match[2].toLowerCase();
  }
  return keys;
}

const PAGE = (player) => `<!doctype html>
<html><head><meta charset="utf-8"><title>playback harness</title></head>
<body>
<video id="video" muted playsinline width="640" height="360"></video>
${player === 'native' ? '' : '<script src="/lib/player.js"></script>'}
<script src="/harness.js"></script>
</body></html>`;

// The page and the player library come from a tiny server on loopback, so
// the page has an http origin (MSE and EME want one) and loads nothing else.
async function startPageServer(player) {
  const files = {
    '/': { type: 'text/html', body: PAGE(player) },
    '/harness.js': { type: 'text/javascript', body: await readFile(join(HERE, 'page.js')) },
  };
  if (player !== 'native') {
    files['/lib/player.js'] = { type: 'text/javascript', body: await readFile(LIBRARIES[player]) };
  }
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://127.0.0.1').pathname;
    const file = files[path];
    if (path === '/favicon.ico') {
      res.writeHead(204);
      res.end();
      return;
    }
    if (!file) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': file.type, 'cache-control': 'no-store' });
    res.end(file.body);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return server;
}

function finished(snap, opts) {
  if (snap.fatal) return true;
  if (snap.ended) return true;
  if (snap.playedTime < opts.minTime) return false;
  if (opts.seekBack) return snap.seekedTo !== null && snap.playedTime - snap.playedAtSeek >= opts.minTime;
  if (!opts.switchLevel) return true;
  return snap.levelSwitched && snap.playedAtSwitch !== null && snap.playedTime - snap.playedAtSwitch >= 1;
}

function report(opts, snap, extraErrors, browserVersion, startedAt) {
  const errors = [...(snap ? snap.errors : []), ...extraErrors];
  let ok = Boolean(snap) && errors.length === 0 && snap.playedTime >= opts.minTime;
  if (ok && opts.switchLevel) ok = snap.levelSwitched;
  if (ok && opts.seekBack) ok = snap.seekedTo !== null && snap.playedTime - snap.playedAtSeek >= opts.minTime;
  if (snap && !ok && errors.length === 0 && opts.seekBack && snap.seekedTo === null) {
    errors.push('never seeked back: no seekable range long enough');
  }
  if (snap && !ok && errors.length === 0) {
    if (snap.ended) errors.push(`stream ended after ${snap.playedTime.toFixed(2)} s played, before ${opts.minTime} s`);
    else if (opts.switchLevel && !snap.levelSwitched) errors.push('the forced level switch did not take effect');
    else errors.push(`played ${snap.playedTime.toFixed(2)} s, wanted ${opts.minTime} s`);
  }
  return {
    ok,
    url: opts.url,
    player: opts.player,
    playerVersion: snap ? snap.playerVersion : null,
    browserVersion,
    currentTime: snap ? snap.currentTime : 0,
    playedTime: snap ? snap.playedTime : 0,
    levels: snap ? snap.levels : [],
    currentLevel: snap ? snap.currentLevel : null,
    levelSwitched: snap ? snap.levelSwitched : false,
    videoWidth: snap ? snap.videoWidth : 0,
    videoHeight: snap ? snap.videoHeight : 0,
    errors,
    warnings: snap ? snap.warnings : [],
    stalls: snap ? snap.stalls : 0,
    stallsAfterSwitch: snap ? snap.stallsAfterSwitch : 0,
    droppedFrames: snap ? snap.droppedFrames : null,
    decodedFrames: snap ? snap.decodedFrames : null,
    latency: snap ? snap.latency : null,
    pdtLatency: snap ? snap.pdtLatency : null,
    seekable: snap ? snap.seekable : null,
    seekableAtSeek: snap ? snap.seekableAtSeek : null,
    seekedTo: snap ? snap.seekedTo : null,
    playedAfterSeek: snap && snap.seekedTo !== null ? snap.playedTime - snap.playedAtSeek : null,
    elapsed: (Date.now() - startedAt) / 1000,
  };
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function play(opts) {
  const startedAt = Date.now();
  const deadline = startedAt + opts.timeout * 1000;
  const extraErrors = [];
  let snap = null;
  let browserVersion = null;
  const profile = await mkdtemp(join(tmpdir(), 'fanz-chromium-'));
  const server = await startPageServer(opts.player);
  let context = null;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: Math.max(1000, deadline - Date.now()),
    });
    const page = context.pages()[0] || await context.newPage();
    browserVersion = (await page.evaluate(() => navigator.userAgent)).replace(/^.*Chrom(?:e|ium)\/([\d.]+).*$/, '$1');
    page.on('pageerror', (err) => extraErrors.push(`page error: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') process.stderr.write(`console: ${msg.text()}\n`);
    });
    const { port } = server.address();
    await page.goto(`http://127.0.0.1:${port}/`, { timeout: Math.max(1000, deadline - Date.now()) });
    await page.evaluate((o) => window.harness.start(o), {
      url: opts.url,
      player: opts.player,
      lowLatency: opts.lowLatency,
      switchLevel: opts.switchLevel,
      seekBack: opts.seekBack || 0,
      clearKeys: opts.clearKeys,
      licenceServer: opts.licenceServer,
    });
    for (;;) {
      snap = await page.evaluate(() => window.harness.snapshot());
      if (finished(snap, opts)) break;
      if (Date.now() >= deadline) {
        extraErrors.push(`timed out after ${opts.timeout} s with ${snap.playedTime.toFixed(2)} s played`);
        break;
      }
      await sleep(POLL_MS);
    }
  } catch (err) {
    extraErrors.push(`harness: ${err && err.message ? err.message.split('\n')[0] : err}`);
  } finally {
    if (context) await context.close().catch(() => {});
    server.close();
    await rm(profile, { recursive: true, force: true });
  }
  return report(opts, snap, extraErrors, browserVersion, startedAt);
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`play.mjs: ${err.message}\n`);
    process.exitCode = 2;
    return;
  }
  const result = await play(opts);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exitCode = result.ok ? 0 : 1;
}

await main();
