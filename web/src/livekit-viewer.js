// The playground's LiveKit side, bundled with livekit-client into serve_app/static/livekit-viewer.js
// (`make web`), so the page fetches nothing from a CDN. Exposed as the global `LiveKitViewer`.
//
// The page joins a `proxy` session's room as the caller (participantToken) and plays the avatar: the
// participant whose attribute lk.publish_on_behalf names our identity (else the agent-kind participant
// publishing a camera track). Speech goes to the avatar as a real agent sends it (the LiveKit Agents
// avatar protocol): PCM16 byte streams on `lk.audio_stream` with sample_rate / num_channels attributes,
// `lk.clear_buffer` RPC to interrupt; the avatar answers with lk.playback_started / lk.playback_finished.
import { ParticipantKind, Room, RoomEvent, Track } from "livekit-client";

const AUDIO_TOPIC = "lk.audio_stream";

export class Viewer {
  constructor(video, { log = () => {}, onEvent = () => {} } = {}) {
    this.video = video;
    this.log = log;
    this.onEvent = onEvent;
    this.room = null;
    this.avatar = null; // identity of the avatar participant, once found
    this.audioElements = [];
    this.writer = null; // the open speech byte stream (one per utterance)
  }

  isAvatar(p) {
    const me = this.room.localParticipant.identity;
    if (p.attributes && p.attributes["lk.publish_on_behalf"]) return p.attributes["lk.publish_on_behalf"] === me;
    return p.kind === ParticipantKind.AGENT;
  }

  async join(url, token) {
    const room = new Room({ adaptiveStream: false, dynacast: false });
    this.room = room;
    room.on(RoomEvent.TrackSubscribed, (track, pub, participant) => {
      if (!this.isAvatar(participant)) return;
      this.avatar = participant.identity;
      if (track.kind === Track.Kind.Video) {
        track.attach(this.video);
        this.log(`video from ${participant.identity} (${pub.source})`);
      } else if (track.kind === Track.Kind.Audio) {
        const el = track.attach();
        el.style.display = "none";
        document.body.appendChild(el);
        this.audioElements.push(el);
        this.log(`audio from ${participant.identity} (${pub.source})`);
      }
    });
    room.on(RoomEvent.ParticipantConnected, (p) => this.log(`joined: ${p.identity}`));
    room.on(RoomEvent.ParticipantDisconnected, (p) => this.log(`left: ${p.identity}`));
    room.on(RoomEvent.Disconnected, (reason) => this.onEvent({ type: "disconnected", reason }));
    room.on(RoomEvent.AudioPlaybackStatusChanged, () => {
      if (!room.canPlaybackAudio) this.log("audio blocked by the browser: click anywhere to hear it");
    });
    room.on(RoomEvent.DataReceived, (payload, participant, kind, topic) => {
      if (topic !== "session.state") return;
      try { this.onEvent(Object.assign({ type: "session.state" }, JSON.parse(new TextDecoder().decode(payload)))); }
      catch (e) { /* not ours */ }
    });
    for (const method of ["lk.playback_started", "lk.playback_finished"]) {
      room.registerRpcMethod(method, async (data) => {
        this.onEvent(Object.assign({ type: method.slice(3) }, data.payload ? JSON.parse(data.payload) : {}));
        return "ok";
      });
    }
    await room.connect(url, token, { autoSubscribe: true });
    this.log(`in room ${room.name} as ${room.localParticipant.identity}`);
    document.addEventListener("click", () => room.startAudio().catch(() => {}), { once: true });
  }

  // Queue PCM16 mono (Int16Array) at `rate` on the current utterance's byte stream (opened on first use).
  async sendPcm(int16, rate) {
    if (!this.avatar) throw new Error("the avatar has not joined the room yet");
    if (!this.writer) {
      this.writer = this.room.localParticipant.streamBytes({
        name: "speech-" + Date.now(), topic: AUDIO_TOPIC, destinationIdentities: [this.avatar],
        attributes: { sample_rate: String(rate), num_channels: "1" },
      });
    }
    const writer = await this.writer;
    await writer.write(new Uint8Array(int16.buffer, int16.byteOffset, int16.byteLength));
  }

  // End the utterance: the avatar plays what it got, then reports lk.playback_finished.
  async endSpeech() {
    const pending = this.writer;
    this.writer = null;
    if (pending) await (await pending).close();
  }

  async interrupt() {
    await this.endSpeech();
    if (this.avatar) await this.room.localParticipant.performRpc({ destinationIdentity: this.avatar, method: "lk.clear_buffer", payload: "" });
  }

  // Decoded-frame counters of the avatar's video (for the page's status line and the browser test).
  async videoStats() {
    for (const p of this.room ? this.room.remoteParticipants.values() : []) {
      if (p.identity !== this.avatar) continue;
      for (const pub of p.videoTrackPublications.values()) {
        if (!pub.track) continue;
        const report = await pub.track.getRTCStatsReport();
        for (const s of report ? report.values() : []) {
          if (s.type === "inbound-rtp" && s.kind === "video") return { framesDecoded: s.framesDecoded || 0, width: s.frameWidth, height: s.frameHeight };
        }
      }
    }
    return { framesDecoded: 0 };
  }

  async leave() {
    this.writer = null;
    if (this.room) await this.room.disconnect();
    for (const el of this.audioElements) el.remove();
    this.audioElements = [];
    this.video.srcObject = null;
    this.room = null;
    this.avatar = null;
  }
}
