/*
 * In-page half of the playback harness. play.mjs serves this file next to the
 * player library, calls window.harness.start(options) once, then polls
 * window.harness.snapshot() until playback has gone far enough, failed, or
 * timed out. Everything that decides pass or fail is recorded here as plain
 * data, so the Node side only has to read it and print it.
 */
(() => {
  'use strict';

  const MAX_MESSAGES = 50;

  const state = {
    player: null,
    playerVersion: null,
    started: false,
    playing: false,
    ended: false,
    fatal: false,
    playedTime: 0,
    stalls: 0,
    stallsAfterSwitch: 0,
    levels: [],
    firstLevel: null,
    currentLevel: null,
    levelSwitched: false,
    switchTarget: null,
    playedAtSwitch: null,
    seekedTo: null,
    playedAtSeek: null,
    seekableAtSeek: null,
    errors: [],
    warnings: [],
  };

  let video = null;
  let hls = null;
  let shakaPlayer = null;
  let dashPlayer = null;
  let options = null;
  let lastTime = null;

  function push(list, message) {
    if (list.length < MAX_MESSAGES) list.push(String(message));
  }

  function fail(message) {
    state.fatal = true;
    push(state.errors, message);
  }

  function watchVideo() {
    // Played time is summed from small forward steps of currentTime, so a
    // live start (which jumps to the live edge) or a seek is not counted as
    // playback: only frames the clock actually moved through are.
    video.addEventListener('timeupdate', () => {
      const now = video.currentTime;
      if (lastTime !== null && !video.seeking) {
        const step = now - lastTime;
        if (step > 0 && step < 2) state.playedTime += step;
      }
      lastTime = now;
    });
    video.addEventListener('seeking', () => { lastTime = null; });
    video.addEventListener('playing', () => { state.playing = true; });
    video.addEventListener('waiting', () => {
      if (!state.playing) return;
      state.stalls += 1;
      if (state.switchTarget !== null) state.stallsAfterSwitch += 1;
    });
    video.addEventListener('ended', () => { state.ended = true; });
    video.addEventListener('error', () => {
      const err = video.error;
      fail(`media element error ${err ? err.code : '?'}: ${err && err.message ? err.message : 'no message'}`);
    });
  }

  function recordLevel(index) {
    state.currentLevel = index;
    if (state.firstLevel === null) {
      state.firstLevel = index;
    } else if (index !== state.firstLevel && state.switchTarget === null) {
      state.levelSwitched = true;
    }
    if (state.switchTarget !== null && index === state.switchTarget) {
      state.levelSwitched = true;
    }
  }

  function startHlsJs() {
    const Hls = window.Hls;
    state.playerVersion = Hls.version;
    if (!Hls.isSupported()) {
      fail('hls.js: MediaSource is not supported in this browser');
      return;
    }
    hls = new Hls({
      lowLatencyMode: options.lowLatency,
      // Fail fast on missing playlists so a broken URL reports quickly.
      manifestLoadPolicy: {
        default: {
          maxTimeToFirstByteMs: 10000,
          maxLoadTimeMs: 20000,
          timeoutRetry: { maxNumRetry: 1, retryDelayMs: 0, maxRetryDelayMs: 0 },
          errorRetry: { maxNumRetry: 1, retryDelayMs: 500, maxRetryDelayMs: 1000 },
        },
      },
    });
    hls.on(Hls.Events.ERROR, (_event, data) => {
      const code = data.response && data.response.code ? ` (HTTP ${data.response.code})` : '';
      const message = `hls.js ${data.type}: ${data.details}${code}`;
      if (data.fatal) fail(message); else push(state.warnings, message);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, (_event, data) => {
      state.levels = data.levels.map((level) => ({
        width: level.width || null,
        height: level.height || null,
        bitrate: level.bitrate || null,
        codecs: [level.videoCodec, level.audioCodec].filter(Boolean).join(','),
      }));
      video.play().catch((err) => push(state.warnings, `play(): ${err}`));
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_event, data) => recordLevel(data.level));
    hls.attachMedia(video);
    hls.loadSource(options.url);
  }

  function shakaLevels() {
    return shakaPlayer.getVariantTracks().map((track) => ({
      id: track.id,
      width: track.width || null,
      height: track.height || null,
      bitrate: track.bandwidth || null,
      codecs: track.codecs || '',
      active: track.active,
    }));
  }

  function shakaActiveLevel() {
    const tracks = shakaPlayer.getVariantTracks();
    const index = tracks.findIndex((track) => track.active);
    return index >= 0 ? index : null;
  }

  async function startShaka() {
    const shaka = window.shaka;
    state.playerVersion = String(shaka.Player.version).replace(/^v/, '');
    shaka.polyfill.installAll();
    if (!shaka.Player.isBrowserSupported()) {
      fail('shaka: browser not supported');
      return;
    }
    shakaPlayer = new shaka.Player();
    await shakaPlayer.attach(video);
    const retry = { maxAttempts: 2, baseDelay: 500, backoffFactor: 2, fuzzFactor: 0, timeout: 15000 };
    const config = {
      manifest: { retryParameters: retry },
      streaming: { retryParameters: retry, lowLatencyMode: options.lowLatency },
    };
    if (options.clearKeys) config.drm = { clearKeys: options.clearKeys };
    // A ClearKey licence server: the CDM's licence request (the key IDs it
    // met in the init segment's pssh) is POSTed there, and the JSON Web Key
    // set it answers goes to the CDM. Shaka's HLS reader knows no ClearKey
    // KEYFORMAT, so the playlist's key tags are left aside and the DRM
    // comes from this configuration and the media. A DASH manifest's
    // ContentProtection is kept: it names the key system and the KIDs, and
    // the configured server replaces its dashif:Laurl.
    if (options.licenceServer) {
      config.drm = { servers: { 'org.w3.clearkey': options.licenceServer } };
      const dash = new URL(options.url, location.href).pathname.endsWith('.mpd');
      if (!dash) config.manifest.ignoreDrmInfo = true;
    }
    shakaPlayer.configure(config);
    if (options.licenceServer) {
      // For org.w3.clearkey, Shaka prefers a manifest's dashif:Laurl to
      // drm.servers (DrmEngine.fillInDrmInfoDefaults_): the harness sends
      // every licence request to the server it was given.
      const licence = shaka.net.NetworkingEngine.RequestType.LICENSE;
      shakaPlayer.getNetworkingEngine().registerRequestFilter((type, request) => {
        if (type === licence) request.uris = [options.licenceServer];
      });
    }
    shakaPlayer.addEventListener('error', (event) => {
      const err = event.detail;
      const message = `shaka error ${err.code} (category ${err.category}, severity ${err.severity})`;
      if (err.severity === shaka.util.Error.Severity.CRITICAL) fail(message); else push(state.warnings, message);
    });
    const onTrackChange = () => {
      const index = shakaActiveLevel();
      if (index !== null) recordLevel(index);
    };
    shakaPlayer.addEventListener('adaptation', onTrackChange);
    shakaPlayer.addEventListener('variantchanged', onTrackChange);
    try {
      await shakaPlayer.load(options.url);
    } catch (err) {
      fail(`shaka load failed: error ${err.code} (category ${err.category})`);
      return;
    }
    state.levels = shakaLevels().map(({ width, height, bitrate, codecs }) => ({ width, height, bitrate, codecs }));
    onTrackChange();
    video.play().catch((err) => push(state.warnings, `play(): ${err}`));
  }

  function dashLevels() {
    const reps = typeof dashPlayer.getRepresentationsByType === 'function'
      ? dashPlayer.getRepresentationsByType('video') : [];
    return reps.map((rep) => ({
      width: rep.width || null,
      height: rep.height || null,
      bitrate: rep.bandwidth || rep.bitrateInKbit * 1000 || null,
      codecs: rep.codecs || '',
    }));
  }

  function startDashJs() {
    const dashjs = window.dashjs;
    dashPlayer = dashjs.MediaPlayer().create();
    state.playerVersion = dashPlayer.getVersion();
    const events = dashjs.MediaPlayer.events;
    dashPlayer.on(events.ERROR, (event) => {
      const err = event.error || {};
      fail(`dash.js error ${err.code}: ${err.message || 'no message'}`);
    });
    dashPlayer.on(events.PLAYBACK_ERROR, (event) => fail(`dash.js playback error: ${event.error}`));
    dashPlayer.on(events.STREAM_INITIALIZED, () => {
      state.levels = dashLevels();
    });
    dashPlayer.on(events.QUALITY_CHANGE_RENDERED, (event) => {
      if (event.mediaType === 'video' && event.newRepresentation) recordLevel(event.newRepresentation.absoluteIndex);
    });
    dashPlayer.initialize(video, options.url, true);
  }

  function startNative() {
    state.playerVersion = navigator.userAgent.replace(/^.*Chrom(e|ium)\/([\d.]+).*$/, '$2');
    if (options.switchLevel) fail('native player: level switching cannot be forced');
    video.src = options.url;
    video.play().catch((err) => push(state.warnings, `play(): ${err}`));
  }

  // Forcing a switch: once playback has run for a second, pick a level other
  // than the current one and wait until the player reports that it plays it.
  function maybeSwitchLevel() {
    if (!options.switchLevel || state.switchTarget !== null || state.fatal) return;
    if (state.playedTime < 1 || state.currentLevel === null) return;
    if (state.levels.length < 2) {
      fail(`cannot switch level: the stream has ${state.levels.length} level(s)`);
      return;
    }
    const target = state.currentLevel === 0 ? state.levels.length - 1 : 0;
    state.switchTarget = target;
    state.levelSwitched = false;
    state.playedAtSwitch = state.playedTime;
    if (hls) {
      hls.currentLevel = target;
    } else if (shakaPlayer) {
      shakaPlayer.configure({ abr: { enabled: false } });
      shakaPlayer.selectVariantTrack(shakaPlayer.getVariantTracks()[target], true);
    }
  }

  // DVR: once a second has played, seek ``seekBack`` seconds behind the end
  // of the seekable range (the live edge) and keep playing from there.
  function seekableRange() {
    if (!video || !video.seekable.length) return null;
    return [video.seekable.start(0), video.seekable.end(video.seekable.length - 1)];
  }

  function maybeSeekBack() {
    if (!options.seekBack || state.seekedTo !== null || state.fatal || state.playedTime < 1) return;
    const range = seekableRange();
    if (!range || range[1] - range[0] < options.seekBack) return;
    state.seekableAtSeek = range;
    state.playedAtSeek = state.playedTime;
    state.seekedTo = range[1] - options.seekBack;
    video.currentTime = state.seekedTo;
  }

  function latency() {
    if (hls) {
      const details = hls.latestLevelDetails;
      if (!details || !details.live) return null;
      const value = hls.latency;
      return Number.isFinite(value) && value > 0 ? value : null;
    }
    if (shakaPlayer && shakaPlayer.isLive()) {
      const value = shakaPlayer.getStats().liveLatency;
      return Number.isFinite(value) && value > 0 ? value : null;
    }
    if (dashPlayer && dashPlayer.isDynamic()) {
      const value = dashPlayer.getCurrentLiveLatency();
      return Number.isFinite(value) && value > 0 ? value : null;
    }
    if (video && video.seekable.length && !Number.isFinite(video.duration)) {
      return video.seekable.end(video.seekable.length - 1) - video.currentTime;
    }
    return null;
  }

  // Latency against the wall clock, from EXT-X-PROGRAM-DATE-TIME when the
  // playlist carries it: the time since the frame on screen was captured.
  function pdtLatency() {
    let date = null;
    if (hls) {
      date = hls.playingDate;
    } else if (shakaPlayer) {
      date = shakaPlayer.isLive() ? shakaPlayer.getPlayheadTimeAsDate() : null;
    } else if (video && typeof video.getStartDate === 'function') {
      const start = video.getStartDate();
      if (start instanceof Date && !Number.isNaN(start.getTime())) {
        date = new Date(start.getTime() + video.currentTime * 1000);
      }
    }
    if (!(date instanceof Date) || Number.isNaN(date.getTime())) return null;
    return (Date.now() - date.getTime()) / 1000;
  }

  async function start(opts) {
    options = opts;
    state.player = opts.player;
    state.started = true;
    video = document.getElementById('video');
    video.muted = true;
    watchVideo();
    try {
      if (opts.player === 'hlsjs') startHlsJs();
      else if (opts.player === 'shaka') await startShaka();
      else if (opts.player === 'dashjs') startDashJs();
      else startNative();
    } catch (err) {
      fail(`player setup threw: ${err && err.stack ? err.stack : err}`);
    }
  }

  function snapshot() {
    maybeSwitchLevel();
    maybeSeekBack();
    const quality = video && video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    return {
      ...state,
      levels: state.levels.slice(),
      errors: state.errors.slice(),
      warnings: state.warnings.slice(),
      currentTime: video ? video.currentTime : 0,
      videoWidth: video ? video.videoWidth : 0,
      videoHeight: video ? video.videoHeight : 0,
      droppedFrames: quality ? quality.droppedVideoFrames : null,
      decodedFrames: quality ? quality.totalVideoFrames : null,
      latency: latency(),
      pdtLatency: pdtLatency(),
      seekable: seekableRange(),
    };
  }

  window.harness = { start, snapshot };
})();
