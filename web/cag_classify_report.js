// The CaG Classify report ("0.768  285: Egyptian cat", p(target), ...) drawn inside the node,
// below its widgets, from the ui.text the node returns when it runs.
import { app } from "../../scripts/app.js";
import { reportLines } from "./cag_readout.js";

const NODE_TYPE = "CaGClassify";
const LINE_HEIGHT = 15;
const PAD = 6;
const CHAR_WIDTH = 7.2; // 12px monospace

function reportSize(lines) {
  if (!lines?.length) return [0, 0];
  const chars = Math.max(...lines.map((line) => line.length));
  return [chars * CHAR_WIDTH + 2 * PAD, lines.length * LINE_HEIGHT + 2 * PAD];
}

function drawReport(ctx, node, lines) {
  const [, height] = reportSize(lines);
  const top = node.size[1] - height;
  ctx.save();
  ctx.fillStyle = "rgba(20, 20, 20, 0.85)";
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(PAD / 2, top, node.size[0] - PAD, height - PAD / 2, 6);
  else ctx.rect(PAD / 2, top, node.size[0] - PAD, height - PAD / 2);
  ctx.fill();
  ctx.fillStyle = "#ddd";
  ctx.font = "12px monospace";
  ctx.textBaseline = "top";
  lines.forEach((line, i) => ctx.fillText(line, PAD + 2, top + PAD + i * LINE_HEIGHT));
  ctx.restore();
}

app.registerExtension({
  name: "comfyui-cag.classifyReport",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const computeSize = nodeType.prototype.computeSize;
    nodeType.prototype.computeSize = function () {
      const size = computeSize ? computeSize.apply(this, arguments) : [...this.size];
      const [width, height] = reportSize(this.cagReport);
      return [Math.max(size[0], width), size[1] + height];
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      this.cagReport = reportLines(message?.text);
      const wanted = this.computeSize();
      this.setSize?.([Math.max(this.size[0], wanted[0]), Math.max(this.size[1], wanted[1])]);
      this.setDirtyCanvas?.(true, true);
      return result;
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const result = onDrawForeground?.apply(this, arguments);
      if (this.cagReport?.length && !this.flags?.collapsed) drawReport(ctx, this, this.cagReport);
      return result;
    };
  },
});
