// COCO run-length encoding (pycocotools' compressed string) -> an RGBA overlay canvas.
"use strict";
const Rle = {
  counts(s) {  // rleFrString: 6-bit chunks, sign-extended, delta-coded from the second run on
    const counts = [];
    let p = 0;
    while (p < s.length) {
      let x = 0, k = 0, more = 1;
      while (more) {
        const c = s.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = c & 0x20; p++; k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  },

  // The mask as a row-major Uint8Array of 0/1 (h * w), to test points and boxes against it.
  bits(mask) {
    const [h, w] = mask.size;
    const out = new Uint8Array(h * w);
    let index = 0, value = 0;
    for (const run of Rle.counts(mask.counts)) {
      if (value) for (let i = index; i < index + run; i++) out[(i % h) * w + Math.floor(i / h)] = 1;
      index += run; value = 1 - value;
    }
    return out;
  },

  // Runs over pixels in column-major order, starting with zeros. Returns {canvas, area}.
  overlay(mask, rgba = [30, 144, 255, 120]) {
    const [h, w] = mask.size;
    const canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(w, h);
    let index = 0, area = 0, value = 0;
    for (const run of Rle.counts(mask.counts)) {
      if (value) {
        for (let i = index; i < index + run; i++) {
          const o = ((i % h) * w + Math.floor(i / h)) * 4;
          image.data[o] = rgba[0]; image.data[o + 1] = rgba[1]; image.data[o + 2] = rgba[2]; image.data[o + 3] = rgba[3];
        }
        area += run;
      }
      index += run; value = 1 - value;
    }
    ctx.putImageData(image, 0, 0);
    return { canvas, area };
  },
};
