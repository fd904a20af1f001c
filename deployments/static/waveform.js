// Draws BBC audiowaveform JSON (version 2) peaks on a canvas: for each bucket and channel the
// data holds min, max as signed integers of `bits` bits. Channels are merged (min of mins,
// max of maxes) into one mirrored shape; the played part is drawn in the accent colour.

function css(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

// Per pixel column: [min, max] in -1..1, from the buckets that fall into it.
export function columns(peaks, width) {
  const channels = Math.max(1, peaks.channels || 1);
  const length = peaks.length || Math.floor(peaks.data.length / (2 * channels));
  const scale = peaks.bits === 16 ? 32768 : 128;
  const out = [];
  for (let x = 0; x < width; x++) {
    const from = Math.floor((x * length) / width);
    const to = Math.max(from + 1, Math.floor(((x + 1) * length) / width));
    let lo = 0;
    let hi = 0;
    for (let b = from; b < to && b < length; b++) {
      for (let c = 0; c < channels; c++) {
        const i = 2 * (b * channels + c);
        lo = Math.min(lo, peaks.data[i]);
        hi = Math.max(hi, peaks.data[i + 1]);
      }
    }
    out.push([lo / scale, hi / scale]);
  }
  return out;
}

export class Waveform {
  constructor(canvas, peaks) {
    this.canvas = canvas;
    this.peaks = peaks;
    this.position = 0; // 0..1, the played fraction
    this.cols = null;
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const cssWidth = canvas.clientWidth || canvas.parentElement.clientWidth || 300;
    const cssHeight = canvas.clientHeight || 96;
    const width = Math.max(1, Math.round(cssWidth * ratio));
    const height = Math.max(1, Math.round(cssHeight * ratio));
    if (canvas.width !== width || canvas.height !== height || !this.cols) {
      canvas.width = width;
      canvas.height = height;
      this.cols = columns(this.peaks, width);
    }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const mid = height / 2;
    const played = Math.round(this.position * width);
    const base = css("--wave", "#6b7a90");
    const accent = css("--accent", "#e0583a");
    for (let x = 0; x < width; x++) {
      const [lo, hi] = this.cols[x];
      const top = mid - hi * mid;
      const bottom = mid - lo * mid;
      ctx.fillStyle = x < played ? accent : base;
      ctx.fillRect(x, top, 1, Math.max(1, bottom - top));
    }
  }

  setPosition(fraction) {
    this.position = Math.min(1, Math.max(0, fraction || 0));
    this.draw();
  }

  // Keep the drawing in step with an <audio> element; clicking the canvas seeks it.
  follow(audio) {
    const update = () => {
      if (audio.duration > 0) this.setPosition(audio.currentTime / audio.duration);
    };
    audio.addEventListener("timeupdate", update);
    audio.addEventListener("seeked", update);
    this.canvas.addEventListener("click", (event) => {
      if (!(audio.duration > 0)) return;
      const rect = this.canvas.getBoundingClientRect();
      audio.currentTime = ((event.clientX - rect.left) / rect.width) * audio.duration;
    });
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }
}
