// Decoders of the engine's streamed answers. Pure functions (unit-tested in ui/tests/).
// Newline-delimited JSON (pull, build, load, stats progress) as objects.
export function jsonLines(onObject) {
  const decoder = new TextDecoder(); let rest = '';
  return chunk => { rest += decoder.decode(chunk, {stream: true}); const lines = rest.split('\n'); rest = lines.pop();
    for (const line of lines) if (line.trim()) { try { onObject(JSON.parse(line)); } catch (e) { onObject({stream: line + '\n'}); } } };
}

// Docker's log stream: without a TTY each frame is [stream, 0, 0, 0, size (4 bytes, big endian)] + payload.
export function dockerStreamDecoder(tty, onText) {
  const decoders = {1: new TextDecoder(), 2: new TextDecoder()};
  let pending = new Uint8Array(0);
  return chunk => {
    if (tty) { onText(1, decoders[1].decode(chunk, {stream: true})); return; }
    const joined = new Uint8Array(pending.length + chunk.length); joined.set(pending); joined.set(chunk, pending.length);
    let offset = 0;
    while (joined.length - offset >= 8) {
      const kind = joined[offset], size = new DataView(joined.buffer, offset + 4, 4).getUint32(0);
      if (joined.length - offset - 8 < size) break;
      onText(kind === 2 ? 2 : 1, decoders[kind === 2 ? 2 : 1].decode(joined.subarray(offset + 8, offset + 8 + size), {stream: true}));
      offset += 8 + size;
    }
    pending = joined.slice(offset);
  };
}
export function demuxLogs(bytes) {
  // Docker frames non-TTY logs: 8-byte header (stream, 0, 0, 0, big-endian length), then the payload.
  const parts = []; let i = 0;
  while (i + 8 <= bytes.length && bytes[i] <= 2 && bytes[i + 1] === 0 && bytes[i + 2] === 0 && bytes[i + 3] === 0) {
    const size = (bytes[i + 4] << 24 | bytes[i + 5] << 16 | bytes[i + 6] << 8 | bytes[i + 7]) >>> 0;
    parts.push(bytes.subarray(i + 8, i + 8 + size)); i += 8 + size; }
  if (i < bytes.length) parts.push(bytes.subarray(i));
  const dec = new TextDecoder(); return parts.map(p => dec.decode(p)).join('');
}
