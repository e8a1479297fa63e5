// Exercises finish on functions returning floating point values and structs of each ABI class (registers, SSE, mixed, in memory).
#include <stdio.h>

struct pair { int a, b; };              /* one integer eightbyte */
struct two_doubles { double x, y; };    /* xmm0, xmm1 */
struct mixed { long n; double d; };     /* rax, xmm0 */
struct floats { float f, g, h; };       /* xmm0 (f, g), xmm1 (h) */
struct big { long v[4]; };              /* in memory: its address in rax */
union num { long l; double d; };        /* an integer eightbyte */
struct small { char c[3]; short s; };   /* one integer eightbyte */

float half(float x) { return x / 2; }
double scale(double x, int k) { return x * k; }
struct pair make_pair(int a) { struct pair p = {a, -2 * a}; return p; }
struct two_doubles make_two(double x) { struct two_doubles t = {x, x / 4}; return t; }
struct mixed make_mixed(long n) { struct mixed m = {n, n + 0.5}; return m; }
struct floats make_floats(float f) { struct floats r = {f, f * 3, -f}; return r; }
struct big make_big(long base) { struct big b = {{base, base + 1, base + 2, base + 3}}; return b; }
union num make_num(long l) { union num n; n.l = l; return n; }
struct small make_small(char c) { struct small s = {{c, (char)(c + 1), (char)(c + 2)}, 300}; return s; }

int main(void)
{
    float f = half(5.0f);
    double d = scale(0.1, 3);
    struct pair p = make_pair(21);
    struct two_doubles t = make_two(2.5);
    struct mixed m = make_mixed(40);
    struct floats r = make_floats(1.25f);
    struct big b = make_big(1000);
    union num n = make_num(-7);
    struct small s = make_small('a');
    printf("%g %g %d %g %ld %g %g %ld %ld %c %d\n", f, d, p.b, t.y, m.n, m.d, r.g, b.v[3], n.l, s.c[2], s.s);
    return 0;
}
