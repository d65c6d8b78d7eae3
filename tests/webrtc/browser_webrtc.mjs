#!/usr/bin/env node
/*
 * Drives the engine's /publish and /watch pages in Debian's headless
 * Chromium and prints one JSON line with what happened.
 *
 *   node browser_webrtc.mjs --base http://127.0.0.1:PORT [--key KEY] --name NAME
 *        [--codec video/H264|video/VP8] [--watch whep,hls] [--seconds 6] [--timeout 60]
 *
 * With --key, a first page goes live through /publish with the fake camera
 * (its frames stamped with the sending time); then one page per --watch mode
 * plays /watch/NAME. For each, decoded-frame counts are sampled twice
 * --seconds apart, and WHEP pages report the latency read back from the
 * stamps. The browser is /usr/bin/chromium with a fresh profile; it never
 * loads anything from outside loopback.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(HERE, '..', 'browser', 'package.json'));
const { chromium } = require('playwright-core');

const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
];

function parse(argv) {
  const o = { base: null, key: null, name: null, codec: 'video/H264', watch: ['whep'], seconds: 6, timeout: 60 };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (k === '--base') o.base = v;
    else if (k === '--key') o.key = v;
    else if (k === '--name') o.name = v;
    else if (k === '--codec') o.codec = v;
    else if (k === '--watch') o.watch = v ? v.split(',') : [];
    else if (k === '--seconds') o.seconds = Number(v);
    else if (k === '--timeout') o.timeout = Number(v);
    else throw new Error(`unknown argument ${k}`);
  }
  if (!o.base || !o.name) throw new Error('--base and --name are required');
  return o;
}

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

async function until(fn, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

async function main() {
  const o = parse(process.argv.slice(2));
  const out = { ok: false, publish: null, watch: {}, errors: [] };
  const profile = await mkdtemp(join(tmpdir(), 'fanz-webrtc-'));
  const deadline = Date.now() + o.timeout * 1000;
  const left = () => Math.max(1000, deadline - Date.now());
  let context = null;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium', headless: true, args: ARGS, timeout: left(),
    });
    const pages = [];
    const watchPage = async (mode) => {
      const page = await context.newPage();
      page.on('pageerror', (e) => out.errors.push(`${mode}: ${e.message}`));
      pages.push(page);
      await page.goto(`${o.base}/watch/${encodeURIComponent(o.name)}?mode=${mode}&stamp=1`);
      return page;
    };
    if (o.key) {
      const page = await context.newPage();
      page.on('pageerror', (e) => out.errors.push(`publish: ${e.message}`));
      pages.push(page);
      const url = `${o.base}/publish?key=${encodeURIComponent(o.key)}&codec=${encodeURIComponent(o.codec)}&autostart=1&stamp=1`;
      await page.goto(url);
      await until(() => page.evaluate(() => window.fanzPublish.state === 'connected' || window.fanzPublish.error),
        left(), 'the publisher to connect');
      const error = await page.evaluate(() => window.fanzPublish.error);
      if (error) throw new Error(`publish failed: ${error}`);
      await until(() => page.evaluate(() => window.fanzPublish.framesSent().then((n) => n > 10)), left(), 'frames sent');
      out.publish = { framesSent: await page.evaluate(() => window.fanzPublish.framesSent()) };
    }
    const watchers = {};
    for (const mode of o.watch) watchers[mode] = await watchPage(mode);
    for (const [mode, page] of Object.entries(watchers)) {
      await until(() => page.evaluate(() => window.fanzWatch.mode !== null || window.fanzWatch.error),
        left(), `${mode} to start`);
      await until(() => page.evaluate(() => window.fanzWatch.decodedFrames().then((n) => n > 0)), left(),
        `${mode} to decode a frame`);
    }
    const first = {};
    for (const [mode, page] of Object.entries(watchers)) first[mode] = await page.evaluate(() => window.fanzWatch.decodedFrames());
    await sleep(o.seconds * 1000);
    for (const [mode, page] of Object.entries(watchers)) {
      const snap = await page.evaluate(async () => ({
        mode: window.fanzWatch.mode,
        error: window.fanzWatch.error,
        decoded: await window.fanzWatch.decodedFrames(),
        stats: await window.fanzWatch.stats(),
        latencies: window.fanzWatch.latencies.slice(-60),
      }));
      const lat = [...snap.latencies].sort((a, b) => a - b);
      out.watch[mode] = {
        mode: snap.mode,
        error: snap.error,
        decodedBefore: first[mode],
        decodedAfter: snap.decoded,
        stats: snap.stats,
        latencyMedianMs: lat.length ? lat[Math.floor(lat.length / 2)] : null,
        latencySamples: lat.length,
      };
    }
    if (o.key) out.publish.framesSentEnd = await pages[0].evaluate(() => window.fanzPublish.framesSent());
    out.ok = out.errors.length === 0 && Object.values(out.watch).every((w) => w.decodedAfter > w.decodedBefore);
  } catch (err) {
    out.errors.push(String(err.message || err));
  } finally {
    if (context) await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true }).catch(() => {});
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(out.ok ? 0 : 1);
}

main();
