"""GLSL building blocks shared by every generated program: hashing, noises, cells, distances, colours.

Prepended to each generated program; the compiler drops what a program does not call. All
functions are written for this project (formulas: integer hashing, quintic-faded lattice noise,
fractional Brownian motion, Worley cells, signed distances of simple shapes, cosine palettes).
"""

LIBRARY = r"""
const float TAU = 6.28318530718;
const float PI = 3.14159265359;

// Integer avalanche hash (xor-shift-multiply); no sin(), so identical on every GPU and llvmpipe.
uint mix_bits(uint x) {
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
    return x;
}
// One avalanche round over a linear combination of the cell coordinates (odd multipliers): half the
// cost of hashing x and y separately, and no visible lattice correlations at these frequencies.
uint hash_bits(vec2 cell) {
    uvec2 q = uvec2(ivec2(cell) + ivec2(1 << 20));
    return mix_bits(q.x * 0x9E3779B1u + q.y * 0x85EBCA77u);
}
float hash_cell(vec2 cell) { return float(hash_bits(cell)) * (1.0 / 4294967295.0); }
vec2 hash_cell2(vec2 cell) {
    uint h = hash_bits(cell);
    return vec2(float(h & 0xffffu), float(h >> 16)) * (1.0 / 65535.0);
}
vec2 quintic(vec2 f) { return f * f * f * (f * (f * 6.0 - 15.0) + 10.0); }

// Lattice value noise in [0, 1].
float value_noise(vec2 p) {
    vec2 i = floor(p), f = fract(p), u = quintic(f);
    float a = hash_cell(i), b = hash_cell(i + vec2(1, 0));
    float c = hash_cell(i + vec2(0, 1)), d = hash_cell(i + vec2(1, 1));
    return mix(mix(a, b, u.x), mix(c, d, u.x), u.y);
}
// Gradient noise mapped to [0, 1]. Gradients are random vectors in [-1, 1]^2 straight from the hash
// bits (no trigonometry: 8 cos/sin per call made this the most expensive function of a program).
float grad_noise(vec2 p) {
    vec2 i = floor(p), f = fract(p), u = quintic(f);
    vec2 ga = hash_cell2(i) * 2.0 - 1.0, gb = hash_cell2(i + vec2(1, 0)) * 2.0 - 1.0;
    vec2 gc = hash_cell2(i + vec2(0, 1)) * 2.0 - 1.0, gd = hash_cell2(i + vec2(1, 1)) * 2.0 - 1.0;
    float a = dot(ga, f), b = dot(gb, f - vec2(1, 0)), c = dot(gc, f - vec2(0, 1)), d = dot(gd, f - vec2(1, 1));
    return 0.5 + 0.7 * mix(mix(a, b, u.x), mix(c, d, u.x), u.y);
}
// Octave rotation: decorrelates the lattice between octaves (no axis-aligned artefacts).
const mat2 OCTAVE = mat2(1.6, 1.2, -1.2, 1.6);
float fbm_value(vec2 p, int octaves, float gain) {
    float sum = 0.0, amp = 0.5, norm = 0.0;
    for (int k = 0; k < octaves; k++) { sum += amp * value_noise(p); norm += amp; p = OCTAVE * p; amp *= gain; }
    return sum / norm;
}
float fbm_grad(vec2 p, int octaves, float gain) {
    float sum = 0.0, amp = 0.5, norm = 0.0;
    for (int k = 0; k < octaves; k++) { sum += amp * grad_noise(p); norm += amp; p = OCTAVE * p; amp *= gain; }
    return sum / norm;
}
float fbm_ridged(vec2 p, int octaves, float gain) {
    float sum = 0.0, amp = 0.5, norm = 0.0;
    for (int k = 0; k < octaves; k++) {
        float r = 1.0 - abs(2.0 * grad_noise(p) - 1.0);
        sum += amp * r * r; norm += amp; p = OCTAVE * p; amp *= gain;
    }
    return sum / norm;
}
// Worley cells: x = distance to nearest feature point, y = second nearest, z = id of the nearest cell.
// The first `count` of the 3 x 3 neighbour cells, row by row (9: all; the interpreter passes 0 when a
// slot is not cells, so that llvmpipe, which runs unselected branches masked, pays one cell, not nine).
vec3 cells(vec2 p, float jitter, int count) {
    vec2 i = floor(p), f = fract(p);
    float d1 = 8.0, d2 = 8.0, id = 0.0;
    for (int k = 0; k < count; k++) {
        vec2 o = vec2(k % 3 - 1, k / 3 - 1);
        vec2 h = hash_cell2(i + o);
        float d = length(o + jitter * h - f);
        if (d < d1) { d2 = d1; d1 = d; id = h.x; } else if (d < d2) { d2 = d; }
    }
    return vec3(d1, d2, id);
}
vec3 cells(vec2 p, float jitter) { return cells(p, jitter, 9); }
float waves(vec2 p, float count, float angle, float freq, float phase) {
    float s = 0.0;
    for (int k = 0; k < 5; k++) {
        if (float(k) >= count) break;
        float a = angle + float(k) * PI / count;
        s += sin(dot(p, vec2(cos(a), sin(a))) * freq + phase * float(k + 1));
    }
    return 0.5 + 0.5 * s / count;
}
mat2 rot(float a) { float c = cos(a), s = sin(a); return mat2(c, s, -s, c); }
vec2 kaleido(vec2 p, float n) {
    float sector = TAU / max(floor(n), 2.0);
    float a = mod(atan(p.y, p.x), sector);
    a = abs(a - 0.5 * sector);
    return length(p) * vec2(cos(a), sin(a));
}
vec2 mirror_tile(vec2 p, float n) { return abs(fract(p * n * 0.5 + 0.5) * 2.0 - 1.0) - 0.5; }
// Signed distances (negative inside).
float sd_circle(vec2 p, float r) { return length(p) - r; }
float sd_box(vec2 p, vec2 b, float round_) { vec2 q = abs(p) - b + round_; return length(max(q, 0.0)) + min(max(q.x, q.y), 0.0) - round_; }
float sd_polygon(vec2 p, float r, float n) {
    float sector = TAU / max(floor(n), 3.0);
    float a = mod(atan(p.y, p.x) + 0.5 * sector, sector) - 0.5 * sector;
    return length(p) * cos(a) - r;
}
float sd_star(vec2 p, float r, float n, float depth) {
    float sector = TAU / max(floor(n), 3.0);
    float a = abs(mod(atan(p.y, p.x), sector) - 0.5 * sector) / (0.5 * sector);
    return length(p) - r * (1.0 - depth * (1.0 - a));
}
float sd_ring(vec2 p, float r, float w) { return abs(length(p) - r) - w; }
float sd_segment(vec2 p, float len, float w) { p.x -= clamp(p.x, -len, len); return length(p) - w; }
float smin(float a, float b, float k) { float h = clamp(0.5 + 0.5 * (b - a) / k, 0.0, 1.0); return mix(b, a, h) - k * h * (1.0 - h); }
float smax(float a, float b, float k) { return -smin(-a, -b, k); }
vec3 cosine_palette(float t, vec3 a, vec3 b, vec3 c, vec3 d) { return a + b * cos(TAU * (c * t + d)); }
vec3 hsv2rgb(vec3 c) { vec3 k = clamp(abs(mod(c.x * 6.0 + vec3(0, 4, 2), 6.0) - 3.0) - 1.0, 0.0, 1.0); return c.z * mix(vec3(1.0), k, c.y); }
vec3 gradient_map(float t, vec3 c0, vec3 c1, vec3 c2, vec3 c3) {
    t = clamp(t, 0.0, 1.0) * 3.0;
    return t < 1.0 ? mix(c0, c1, t) : (t < 2.0 ? mix(c1, c2, t - 1.0) : mix(c2, c3, t - 2.0));
}
"""
