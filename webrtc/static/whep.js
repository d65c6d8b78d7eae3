// WHEP playback with an HLS fallback. Needs whip.js (FanzStamp and the ICE
// helper) loaded first; hls.js is optional (native HLS is used without it).
'use strict';

class WhepPlayer {
  constructor(endpoint, video, options = {}) {
    this.endpoint = endpoint;
    this.video = video;
    this.token = options.token || null;
    this.iceServers = options.iceServers || [];
    this.pc = null;
    this.location = null;
  }

  async play() {
    this.pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc.addTransceiver('video', { direction: 'recvonly' });
    this.pc.addTransceiver('audio', { direction: 'recvonly' });
    const stream = new MediaStream();
    this.pc.addEventListener('track', (event) => {
      stream.addTrack(event.track);
      this.video.srcObject = stream;
    });
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await window.fanzWaitForIceGathering(this.pc, 3000);
    const headers = { 'Content-Type': 'application/sdp' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const resp = await fetch(this.endpoint, { method: 'POST', headers, body: this.pc.localDescription.sdp });
    const body = await resp.text();
    if (resp.status !== 201) {
      this.pc.close();
      throw new Error(`WHEP ${resp.status}: ${body.trim()}`);
    }
    this.location = new URL(resp.headers.get('Location'), this.endpoint).toString();
    await this.pc.setRemoteDescription({ type: 'answer', sdp: body });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('WHEP connection timed out')), 8000);
      const check = () => {
        if (this.pc.connectionState === 'connected') { clearTimeout(timer); resolve(); }
        if (this.pc.connectionState === 'failed') { clearTimeout(timer); reject(new Error('WHEP connection failed')); }
      };
      this.pc.addEventListener('connectionstatechange', check);
      check();
    });
  }

  async stats() {
    const out = { videoFramesDecoded: 0, audioSamplesReceived: 0, audioPacketsReceived: 0, videoCodec: null };
    if (!this.pc) return out;
    const report = await this.pc.getStats();
    const codecs = {};
    report.forEach((s) => { if (s.type === 'codec') codecs[s.id] = s.mimeType; });
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'video') {
        out.videoFramesDecoded = s.framesDecoded || 0;
        out.videoCodec = codecs[s.codecId] || null;
      } else if (s.kind === 'audio') {
        out.audioSamplesReceived = s.totalSamplesReceived || 0;
        out.audioPacketsReceived = s.packetsReceived || 0;
        out.audioCodec = codecs[s.codecId] || null;
      }
    });
    return out;
  }

  async stop() {
    if (this.location) {
      await fetch(this.location, { method: 'DELETE' }).catch(() => {});
      this.location = null;
    }
    if (this.pc) this.pc.close();
  }
}

function playHls(video, url) {
  if (window.Hls && window.Hls.isSupported()) {
    const hls = new window.Hls({ lowLatencyMode: true, liveSyncDurationCount: 2 });
    hls.loadSource(url);
    hls.attachMedia(video);
    return hls;
  }
  video.src = url;
  return null;
}

window.WhepPlayer = WhepPlayer;
window.fanzPlayHls = playHls;
