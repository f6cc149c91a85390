// A symbol's price chart: candles and volume, history from the candle endpoint, the forming
// bar live from the `candles.SYM.IV` channel, and the trader's own fills as markers.
//
//   import { mountChart } from "./chart.js";
//   const market = new MarketStream().start();
//   const chart = mountChart(element, { symbol: "AAPL", interval: "1m", market });
//   chart.setInterval("5m"); chart.setSymbol("MSFT");
//   chart.markFills([{ price: "100.50", quantity: "2", side: "buy", ts: 1700000000000 }]);
//   chart.destroy();
//
// History is the latest 500 bars of GET /marketdata/api/candles/; bars are keyed by `start`
// (epoch ms; the chart's time is seconds) and the latest message about a bar replaces it, so
// a live bar that the history also holds simply wins. Prices and volumes come as decimal
// strings and are turned into numbers here for drawing only.
//
// Drawn by TradingView Lightweight Charts (Apache-2.0; THIRD_PARTY_NOTICES.md), served from
// static/vendor/lightweight-charts/ (package.json pins it; scripts/setup.sh installs it). Its
// own attribution logo injects a <style> element, which the Content-Security-Policy refuses,
// so each chart carries a plain "Charts by TradingView" link instead (static/css/chart.css).
//
// Colours: `theme` "dark" (the default) or "light"; any of the CSS custom properties
// --chart-bg, --chart-text, --chart-grid, --chart-up, --chart-down set on the container (or
// above it) override the theme's.

import {
  CandlestickSeries,
  ColorType,
  HistogramSeries,
  createChart,
  createSeriesMarkers,
} from "../vendor/lightweight-charts/lightweight-charts.standalone.production.mjs";

export const INTERVALS = { "1s": 1, "1m": 60, "5m": 300, "1h": 3600 };
export const HISTORY_BARS = 500;
const MAX_BARS = 2000; // history plus what the live channel added since
const CANDLES_URL = "/marketdata/api/candles/";
export const ATTRIBUTION_URL = "https://www.tradingview.com/";

const THEMES = {
  dark: { bg: "#0f1419", text: "#d8dee6", grid: "#25303b", up: "#2fbf71", down: "#e5484d" },
  light: { bg: "#ffffff", text: "#191919", grid: "#e6e9ee", up: "#138a4b", down: "#c9302c" },
};

let stylesheet = null;

// chart.css, once per document, next to this module whatever STATIC_URL is.
function loadStylesheet() {
  if (stylesheet?.isConnected) return;
  stylesheet = document.createElement("link");
  stylesheet.rel = "stylesheet";
  stylesheet.href = new URL("../css/chart.css", import.meta.url).href;
  document.head.appendChild(stylesheet);
}

function palette(element, theme) {
  const base = THEMES[theme] || THEMES.dark;
  const style = getComputedStyle(element);
  const colours = {};
  for (const [name, fallback] of Object.entries(base)) {
    colours[name] = style.getPropertyValue(`--chart-${name}`).trim() || fallback;
  }
  return colours;
}

// "#2fbf71" -> "rgba(47, 191, 113, 0.5)"; other colour syntaxes are kept as they are.
function translucent(colour, alpha) {
  const hex = /^#([0-9a-f]{6})$/i.exec(colour);
  if (!hex) return colour;
  const n = parseInt(hex[1], 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

function decimals(text) {
  const dot = String(text).indexOf(".");
  return dot < 0 ? 0 : String(text).length - dot - 1;
}

function checkInterval(interval) {
  if (!(interval in INTERVALS)) {
    throw new RangeError(`chart: interval must be one of ${Object.keys(INTERVALS).join(", ")}`);
  }
}

export function mountChart(container, { symbol, interval = "1m", market = null, theme = "dark" }) {
  if (!symbol) throw new TypeError("chart: symbol is required");
  checkInterval(interval);
  loadStylesheet();

  const root = document.createElement("div");
  root.className = "tredye-chart";
  root.dataset.theme = theme;
  const canvas = document.createElement("div");
  canvas.className = "tredye-chart__canvas";
  const attribution = document.createElement("a");
  attribution.className = "tredye-chart__attribution";
  attribution.href = ATTRIBUTION_URL;
  attribution.target = "_blank";
  attribution.rel = "noopener";
  attribution.textContent = "Charts by TradingView";
  root.append(canvas, attribution);
  container.appendChild(root);

  // autoSize: the library follows the element's size with a ResizeObserver.
  const chart = createChart(canvas, {
    autoSize: true,
    layout: { attributionLogo: false, background: { type: ColorType.Solid } },
    timeScale: { timeVisible: true, secondsVisible: false, rightOffset: 6 },
    rightPriceScale: { scaleMargins: { top: 0.1, bottom: 0.25 } },
  });
  const candles = chart.addSeries(CandlestickSeries, {});
  const volume = chart.addSeries(HistogramSeries, {
    priceFormat: { type: "volume" },
    priceScaleId: "volume",
    lastValueVisible: false,
    priceLineVisible: false,
  });
  chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  const markers = createSeriesMarkers(candles, []);

  let colours = null;
  let bars = new Map(); // start (ms) -> bar, as the server sent it
  let loaded = false; // history drawn: live bars may be drawn one by one from now on
  let channel = null;
  let generation = 0; // a symbol or interval change makes older answers stale
  let fills = [];
  let precision = 2;

  function applyTheme(name) {
    theme = name;
    root.dataset.theme = name;
    colours = palette(root, name);
    chart.applyOptions({
      layout: { background: { type: ColorType.Solid, color: colours.bg }, textColor: colours.text },
      grid: { vertLines: { color: colours.grid }, horzLines: { color: colours.grid } },
      rightPriceScale: { borderColor: colours.grid },
      timeScale: { borderColor: colours.grid },
    });
    candles.applyOptions({
      upColor: colours.up,
      downColor: colours.down,
      borderUpColor: colours.up,
      borderDownColor: colours.down,
      wickUpColor: colours.up,
      wickDownColor: colours.down,
    });
    if (loaded) redraw();
  }

  function candle(bar) {
    return {
      time: bar.start / 1000,
      open: Number(bar.open),
      high: Number(bar.high),
      low: Number(bar.low),
      close: Number(bar.close),
    };
  }

  function volumeBar(bar) {
    const up = Number(bar.close) >= Number(bar.open);
    return {
      time: bar.start / 1000,
      value: Number(bar.volume),
      color: translucent(up ? colours.up : colours.down, 0.45),
    };
  }

  // The price scale shows as many decimals as the prices carry (at least 2, at most 8).
  function fitPrecision(list) {
    let places = 2;
    for (const bar of list) {
      places = Math.max(places, decimals(bar.open), decimals(bar.high), decimals(bar.low));
      places = Math.max(places, decimals(bar.close));
    }
    places = Math.min(places, 8);
    if (places === precision) return;
    precision = places;
    candles.applyOptions({
      priceFormat: { type: "price", precision, minMove: 1 / 10 ** precision },
    });
  }

  function trim() {
    if (bars.size <= MAX_BARS) return;
    const starts = [...bars.keys()].sort((a, b) => a - b);
    for (const start of starts.slice(0, starts.length - MAX_BARS)) bars.delete(start);
  }

  function redraw() {
    const list = [...bars.values()].sort((a, b) => a.start - b.start);
    fitPrecision(list);
    candles.setData(list.map(candle));
    volume.setData(list.map(volumeBar));
    drawFills();
  }

  function accept(list) {
    for (const bar of list) {
      if (typeof bar?.start !== "number") continue;
      const held = bars.get(bar.start);
      if (held?.closed && !bar.closed) continue; // a closed bar is final
      bars.set(bar.start, bar);
    }
    trim();
  }

  // Live bars: the newest is updated in place; an older one (a late closing message) is a
  // historical update.
  function live(changed) {
    if (!loaded || !changed.length) return;
    accept(changed);
    const last = candles.data().at(-1)?.time ?? -Infinity;
    fitPrecision(changed);
    try {
      for (const bar of [...changed].sort((a, b) => a.start - b.start)) {
        if (bars.get(bar.start) !== bar) continue; // refused above
        const older = bar.start / 1000 < last;
        candles.update(candle(bar), older);
        volume.update(volumeBar(bar), older);
      }
    } catch {
      redraw(); // an older bar the chart did not have: draw them all again
      return;
    }
    if (fills.length) drawFills();
  }

  function subscribe() {
    if (!market) return;
    channel = `candles.${symbol}.${interval}`;
    const state = market.subscribe(channel, {
      limit: HISTORY_BARS,
      onChange: (_state, changes) => live(changes.bars),
    });
    return state;
  }

  function unsubscribe() {
    if (market && channel) market.unsubscribe(channel);
    channel = null;
  }

  async function load() {
    const mine = ++generation;
    unsubscribe();
    bars = new Map();
    loaded = false;
    candles.setData([]);
    volume.setData([]);
    markers.setMarkers([]);
    root.dataset.symbol = symbol;
    root.dataset.interval = interval;
    root.dataset.state = "loading";
    chart.applyOptions({ timeScale: { secondsVisible: interval === "1s" } });
    // Subscribed first, so no bar falls between the history and the stream.
    const state = subscribe();
    const url = `${CANDLES_URL}?${new URLSearchParams({ symbol, interval })}`;
    let history;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
      history = (await response.json()).candles;
    } catch (error) {
      if (mine !== generation) return;
      console.error(`chart: ${symbol} ${interval} history`, error);
      root.dataset.state = "error";
      history = [];
    }
    if (mine !== generation) return; // another symbol or interval was asked for meanwhile
    accept(history);
    if (state) accept(state.list()); // what the channel brought while the history came
    loaded = true;
    redraw();
    chart.timeScale().scrollToRealTime();
    if (root.dataset.state === "loading") root.dataset.state = "ready";
  }

  function drawFills() {
    const step = INTERVALS[interval] * 1000;
    const list = fills
      .filter((fill) => Number.isFinite(Number(fill.ts)))
      .map((fill) => {
        const buy = fill.side === "buy";
        const ts = Number(fill.ts);
        return {
          time: (ts - (ts % step)) / 1000, // the bar the fill is in
          position: buy ? "belowBar" : "aboveBar",
          shape: buy ? "arrowUp" : "arrowDown",
          color: buy ? colours.up : colours.down,
          text: `${buy ? "B" : "S"} ${fill.quantity} @ ${fill.price}`,
        };
      })
      .sort((a, b) => a.time - b.time);
    markers.setMarkers(list);
  }

  applyTheme(theme);
  load();

  return {
    element: root,
    chart,
    candles,
    volume,
    get symbol() {
      return symbol;
    },
    get interval() {
      return interval;
    },
    // Resolves when the history of the current symbol and interval is drawn.
    ready() {
      return new Promise((resolve) => {
        const check = () => (loaded ? resolve() : requestAnimationFrame(check));
        check();
      });
    },
    setInterval(next) {
      checkInterval(next);
      if (next === interval) return;
      interval = next;
      load();
    },
    setSymbol(next) {
      if (!next) throw new TypeError("chart: symbol is required");
      if (next === symbol) return;
      symbol = next;
      fills = [];
      load();
    },
    setTheme(next) {
      applyTheme(next);
    },
    // The trader's own fills ({price, quantity, side, ts}), each at the bar it happened in;
    // replaces the fills marked before.
    markFills(list) {
      fills = [...(list || [])];
      if (loaded) drawFills();
    },
    markers() {
      return markers.markers();
    },
    destroy() {
      generation += 1;
      unsubscribe();
      markers.detach();
      chart.remove();
      root.remove();
    },
  };
}
