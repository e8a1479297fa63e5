// Exercises vector registers (ymm0-15, or zmm0-31 with AVX-512) that hold values while the checkpoint lands.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>

#define BLOCKS 16
#define SLEEPS_PER_BLOCK 5
#define SLEEP_NS (25 * 1000 * 1000)

/* Distinct bytes for every (block, register, byte): a register restored from the wrong place shows. */
static void fill(unsigned char *regs, int nregs, int width, int block) {
    for (int r = 0; r < nregs; r++)
        for (int b = 0; b < width; b++)
            regs[r * width + b] = (unsigned char)(block * 97 + r * 31 + b * 7 + 1);
}

/* Loads ymm0-15, sleeps `sleeps` times with raw nanosleep syscalls from inside the asm block (the
 * registers stay live in the CPU, never spilled), then stores them back. */
static void hold_ymm(const unsigned char *in, unsigned char *out, long sleeps, const struct timespec *ts) {
    __asm__ volatile("vmovdqu 0*32(%[in]), %%ymm0\n\t"
                     "vmovdqu 1*32(%[in]), %%ymm1\n\t"
                     "vmovdqu 2*32(%[in]), %%ymm2\n\t"
                     "vmovdqu 3*32(%[in]), %%ymm3\n\t"
                     "vmovdqu 4*32(%[in]), %%ymm4\n\t"
                     "vmovdqu 5*32(%[in]), %%ymm5\n\t"
                     "vmovdqu 6*32(%[in]), %%ymm6\n\t"
                     "vmovdqu 7*32(%[in]), %%ymm7\n\t"
                     "vmovdqu 8*32(%[in]), %%ymm8\n\t"
                     "vmovdqu 9*32(%[in]), %%ymm9\n\t"
                     "vmovdqu 10*32(%[in]), %%ymm10\n\t"
                     "vmovdqu 11*32(%[in]), %%ymm11\n\t"
                     "vmovdqu 12*32(%[in]), %%ymm12\n\t"
                     "vmovdqu 13*32(%[in]), %%ymm13\n\t"
                     "vmovdqu 14*32(%[in]), %%ymm14\n\t"
                     "vmovdqu 15*32(%[in]), %%ymm15\n\t"
                     "1:\n\t"
                     "movl %[nr], %%eax\n\t"
                     "movq %[ts], %%rdi\n\t"
                     "xorl %%esi, %%esi\n\t"
                     "syscall\n\t"
                     "decq %[n]\n\t"
                     "jnz 1b\n\t"
                     "vmovdqu %%ymm0, 0*32(%[out])\n\t"
                     "vmovdqu %%ymm1, 1*32(%[out])\n\t"
                     "vmovdqu %%ymm2, 2*32(%[out])\n\t"
                     "vmovdqu %%ymm3, 3*32(%[out])\n\t"
                     "vmovdqu %%ymm4, 4*32(%[out])\n\t"
                     "vmovdqu %%ymm5, 5*32(%[out])\n\t"
                     "vmovdqu %%ymm6, 6*32(%[out])\n\t"
                     "vmovdqu %%ymm7, 7*32(%[out])\n\t"
                     "vmovdqu %%ymm8, 8*32(%[out])\n\t"
                     "vmovdqu %%ymm9, 9*32(%[out])\n\t"
                     "vmovdqu %%ymm10, 10*32(%[out])\n\t"
                     "vmovdqu %%ymm11, 11*32(%[out])\n\t"
                     "vmovdqu %%ymm12, 12*32(%[out])\n\t"
                     "vmovdqu %%ymm13, 13*32(%[out])\n\t"
                     "vmovdqu %%ymm14, 14*32(%[out])\n\t"
                     "vmovdqu %%ymm15, 15*32(%[out])\n\t"
                     "vzeroupper\n\t"
                     : [n] "+r"(sleeps)
                     : [in] "r"(in), [out] "r"(out), [ts] "r"(ts), [nr] "i"(SYS_nanosleep)
                     : "rax", "rcx", "rdi", "rsi", "r11", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3",
                       "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
                       "xmm14", "xmm15");
}

/* The same with all 32 zmm registers, on CPUs with AVX-512. */
__attribute__((target("avx512f"))) static void hold_zmm(const unsigned char *in, unsigned char *out,
                                                        long sleeps, const struct timespec *ts) {
#define LD(i) "vmovdqu64 " #i "*64(%[in]), %%zmm" #i "\n\t"
#define ST(i) "vmovdqu64 %%zmm" #i ", " #i "*64(%[out])\n\t"
    __asm__ volatile(LD(0) LD(1) LD(2) LD(3) LD(4) LD(5) LD(6) LD(7) LD(8) LD(9) LD(10) LD(11) LD(12)
                         LD(13) LD(14) LD(15) LD(16) LD(17) LD(18) LD(19) LD(20) LD(21) LD(22) LD(23)
                             LD(24) LD(25) LD(26) LD(27) LD(28) LD(29) LD(30) LD(31)
                     "1:\n\t"
                     "movl %[nr], %%eax\n\t"
                     "movq %[ts], %%rdi\n\t"
                     "xorl %%esi, %%esi\n\t"
                     "syscall\n\t"
                     "decq %[n]\n\t"
                     "jnz 1b\n\t" ST(0) ST(1) ST(2) ST(3) ST(4) ST(5) ST(6) ST(7) ST(8) ST(9) ST(10)
                         ST(11) ST(12) ST(13) ST(14) ST(15) ST(16) ST(17) ST(18) ST(19) ST(20) ST(21)
                             ST(22) ST(23) ST(24) ST(25) ST(26) ST(27) ST(28) ST(29) ST(30) ST(31)
                     "vzeroupper\n\t"
                     : [n] "+r"(sleeps)
                     : [in] "r"(in), [out] "r"(out), [ts] "r"(ts), [nr] "i"(SYS_nanosleep)
                     : "rax", "rcx", "rdi", "rsi", "r11", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3",
                       "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
                       "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",
                       "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31");
#undef LD
#undef ST
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int avx512 = __builtin_cpu_supports("avx512f");
    int nregs = avx512 ? 32 : 16, width = avx512 ? 64 : 32;
    static unsigned char in[32 * 64], out[32 * 64];
    struct timespec ts = {0, SLEEP_NS};
    printf("simd_regs: %d blocks of %d sleeps with constants held in vector registers\n", BLOCKS,
           SLEEPS_PER_BLOCK);
    int failures = 0;
    for (int block = 0; block < BLOCKS; block++) {
        fill(in, nregs, width, block);
        memset(out, 0, sizeof out);
        if (avx512)
            hold_zmm(in, out, SLEEPS_PER_BLOCK, &ts);
        else
            hold_ymm(in, out, SLEEPS_PER_BLOCK, &ts);
        int bad = -1;
        for (int r = 0; r < nregs && bad < 0; r++)
            if (memcmp(in + r * width, out + r * width, width) != 0)
                bad = r;
        if (bad < 0) {
            printf("block %2d: vector registers OK\n", block);
        } else {
            failures++;
            printf("block %2d: MISMATCH in vector register %d\n", block, bad);
        }
    }
    printf("done: %d blocks with mismatches\n", failures);
    return failures != 0;
}
