// Pure helpers for the CaG Optimize loss readout (no DOM, no ComfyUI imports: testable with node).

export const HISTORY = 300; // loss samples kept per node for the sparkline

// Add one "cag.progress" event to a node's readout state; a new run starts a new history.
export function pushLoss(state, detail) {
  const step = Number(detail.step);
  const total = Number(detail.total);
  const loss = Number(detail.loss);
  const fresh = !state || step <= state.step || total !== state.total;
  const losses = fresh ? [] : state.losses.slice(-(HISTORY - 1));
  losses.push(loss);
  return { step, total, loss, losses };
}

export function formatLoss(loss) {
  if (!Number.isFinite(loss)) return String(loss);
  return Math.abs(loss) >= 100 ? loss.toFixed(1) : loss.toPrecision(4);
}

export function formatReadout(state) {
  return `step ${state.step}/${state.total} · loss ${formatLoss(state.loss)}`;
}

// Polyline points [x, y] of the losses inside a width x height box (y grows downwards).
export function sparklinePoints(losses, width, height) {
  if (losses.length < 2) return [];
  const lo = Math.min(...losses);
  const span = Math.max(...losses) - lo || 1;
  return losses.map((value, i) => [(i / (losses.length - 1)) * width, height - ((value - lo) / span) * height]);
}

// The report a CaG Classify node shows: ComfyUI hands the node's ui.text over as a list of
// strings. Long lines are cut and long reports capped, so a big batch cannot grow the node
// without bound.
export const REPORT_MAX_LINES = 40;
export const REPORT_MAX_CHARS = 72;

export function reportLines(text, maxLines = REPORT_MAX_LINES, maxChars = REPORT_MAX_CHARS) {
  const joined = Array.isArray(text) ? text.join("\n") : String(text ?? "");
  if (!joined) return [];
  const lines = joined.split("\n").map((line) => (line.length > maxChars ? `${line.slice(0, maxChars - 1)}…` : line));
  if (lines.length <= maxLines) return lines;
  const kept = lines.slice(0, maxLines - 1);
  kept.push(`… ${lines.length - kept.length} more lines (see the report output)`);
  return kept;
}
