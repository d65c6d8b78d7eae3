// WHIP (RFC 9725) publishing from a browser tab, and the frame stamp used to
// measure glass-to-glass latency. No build step, no outside requests.
'use strict';

const FanzStamp = {
  BITS: 40,
  BLOCK: 16,
  // Draw Date.now() (low 40 bits) as black/white blocks across the top row.
  draw(ctx, value) {
    for (let i = 0; i < this.BITS; i += 1) {
      const bit = Math.floor(value / 2 ** (this.BITS - 1 - i)) % 2;
      ctx.fillStyle = bit ? '#fff' : '#000';
      ctx.fillRect(i * this.BLOCK, 0, this.BLOCK, this.BLOCK);
    }
  },
  // Read the value back from an RGBA row of pixels taken at y = BLOCK / 2.
  read(pixels, width) {
    let value = 0;
    for (let i = 0; i < this.BITS; i += 1) {
      const x = i * this.BLOCK + this.BLOCK / 2;
      if (x >= width) return null;
      const o = x * 4;
      const luma = (pixels[o] + pixels[o + 1] + pixels[o + 2]) / 3;
      value = value * 2 + (luma > 128 ? 1 : 0);
    }
    return value;
  },
  now() {
    return Date.now() % 2 ** this.BITS;
  },
};

async function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return;
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

function preferCodec(transceiver, mimeType) {
  if (!window.RTCRtpSender || !RTCRtpSender.getCapabilities || !transceiver.setCodecPreferences) return;
  const caps = RTCRtpSender.getCapabilities(transceiver.sender.track.kind);
  if (!caps) return;
  const first = caps.codecs.filter((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase()
    && (!c.sdpFmtpLine || c.sdpFmtpLine.includes('packetization-mode=1')));
  const rest = caps.codecs.filter((c) => !first.includes(c));
  if (first.length) transceiver.setCodecPreferences([...first, ...rest]);
}

class WhipPublisher {
  constructor(endpoint, options = {}) {
    this.endpoint = endpoint;
    this.iceServers = options.iceServers || [];
    this.videoCodec = options.videoCodec || 'video/H264';
    this.pc = null;
    this.location = null;
  }

  async publish(stream) {
    this.pc = new RTCPeerConnection({ iceServers: this.iceServers });
    for (const track of stream.getTracks()) {
      const transceiver = this.pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      if (track.kind === 'video') preferCodec(transceiver, this.videoCodec);
    }
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await waitForIceGathering(this.pc, 3000);
    const resp = await fetch(this.endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp' },
      body: this.pc.localDescription.sdp,
    });
    const body = await resp.text();
    if (resp.status !== 201) {
      this.pc.close();
      throw new Error(`WHIP ${resp.status}: ${body.trim()}`);
    }
    this.location = new URL(resp.headers.get('Location'), this.endpoint).toString();
    await this.pc.setRemoteDescription({ type: 'answer', sdp: body });
    return this.location;
  }

  async stop() {
    if (this.location) {
      await fetch(this.location, { method: 'DELETE' }).catch(() => {});
      this.location = null;
    }
    if (this.pc) this.pc.close();
  }
}

window.FanzStamp = FanzStamp;
window.WhipPublisher = WhipPublisher;
window.fanzWaitForIceGathering = waitForIceGathering;
