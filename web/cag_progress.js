// Live loss readout on CaG Optimize nodes: "step 37/100 · loss 1.234" and a loss sparkline,
// drawn above the node's title from the "cag.progress" events the node sends while it runs.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { formatReadout, pushLoss, sparklinePoints } from "./cag_readout.js";

const NODE_TYPE = "CaGOptimize";
const EVENT = "cag.progress";
const BOX_HEIGHT = 22;
const SPARK_WIDTH = 70;

function findNode(id) {
  // Top-level node ids are numbers; ids inside subgraphs ("12:5") have no top-level node.
  return app.graph?.getNodeById(Number(id)) ?? app.graph?.getNodeById(id) ?? null;
}

function drawReadout(ctx, node, state) {
  const titleHeight = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  const width = node.size[0];
  const top = -titleHeight - BOX_HEIGHT - 4;
  ctx.save();
  ctx.fillStyle = "rgba(20, 20, 20, 0.85)";
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(0, top, width, BOX_HEIGHT, 6);
  else ctx.rect(0, top, width, BOX_HEIGHT);
  ctx.fill();
  ctx.fillStyle = "#ddd";
  ctx.font = "12px monospace";
  ctx.textBaseline = "middle";
  ctx.fillText(formatReadout(state), 8, top + BOX_HEIGHT / 2);
  const points = sparklinePoints(state.losses, SPARK_WIDTH, BOX_HEIGHT - 8);
  if (points.length) {
    ctx.strokeStyle = "#7fd37f";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    points.forEach(([x, y], i) => {
      const px = width - SPARK_WIDTH - 8 + x;
      const py = top + 4 + y;
      i ? ctx.lineTo(px, py) : ctx.moveTo(px, py);
    });
    ctx.stroke();
  }
  ctx.restore();
}

app.registerExtension({
  name: "comfyui-cag.lossReadout",
  setup() {
    api.addEventListener(EVENT, ({ detail }) => {
      const node = findNode(detail.node);
      if (!node) return;
      node.cagReadout = pushLoss(node.cagReadout, detail);
      node.setDirtyCanvas?.(true, false);
    });
  },
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const result = onDrawForeground?.apply(this, arguments);
      if (this.cagReadout && !this.flags?.collapsed) drawReadout(ctx, this, this.cagReadout);
      return result;
    };
  },
});
