// The depth chart: cumulative size against price on a canvas, bids left of the mid, asks
// right, from the same levels the ladder shows. Drawing only: sizes become numbers here.

export class DepthChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    // The size comes from a ResizeObserver: reading it while drawing, after the ladder's
    // changes in the same frame, would force a layout every frame.
    this.width = canvas.clientWidth;
    this.height = canvas.clientHeight;
    new ResizeObserver(([entry]) => {
      this.width = entry.contentRect.width;
      this.height = entry.contentRect.height;
      if (this.last) this.draw(...this.last);
    }).observe(canvas);
  }

  // The theme's colours, read again only when the theme changes (reading computed style every
  // frame costs a style recalculation each time).
  colours() {
    const theme = document.documentElement.dataset.theme;
    if (this.theme !== theme) {
      const style = getComputedStyle(document.documentElement);
      this.theme = theme;
      this.palette = {
        up: style.getPropertyValue("--up").trim() || "#2fbf71",
        down: style.getPropertyValue("--down").trim() || "#e5484d",
      };
    }
    return this.palette;
  }

  draw(bids, asks) {
    const { canvas, context } = this;
    this.last = [bids, asks];
    const ratio = window.devicePixelRatio || 1;
    const { width, height } = this;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    if (!bids.length || !asks.length) return;
    const cumulative = (levels) => {
      let total = 0;
      return levels.map(([price, size]) => [Number(price), (total += Number(size))]);
    };
    const b = cumulative(bids);
    const a = cumulative(asks);
    const low = b[b.length - 1][0];
    const high = a[a.length - 1][0];
    const most = Math.max(b[b.length - 1][1], a[a.length - 1][1]);
    const x = (price) => ((price - low) / (high - low || 1)) * width;
    const y = (total) => height - (total / most) * (height - 4);
    const colours = this.colours();
    for (const [points, colour] of [[b, colours.up], [a, colours.down]]) {
      context.beginPath();
      context.moveTo(x(points[0][0]), height);
      for (const [price, total] of points) {
        context.lineTo(x(price), y(total));
      }
      context.lineTo(x(points[points.length - 1][0]), height);
      context.closePath();
      context.fillStyle = colour;
      context.globalAlpha = 0.25;
      context.fill();
      context.globalAlpha = 1;
      context.strokeStyle = context.fillStyle;
      context.stroke();
    }
    this.drawn = { bids: b.length, asks: a.length };
  }
}
