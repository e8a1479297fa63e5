/* The syscall buffer's in-process code (record-replay/src/sbuf.rs).
 *
 * Mapped by the recorder at SBUF_BASE in the recorded program; patched
 * syscall sites jump to a stub that calls sbuf_entry with the syscall
 * number pushed. Record: the buffered syscall is made here (the seccomp
 * filter lets syscalls from this code through) and appended, with the
 * memory it wrote, to the buffer the recorder flushes into the trace at
 * its next stop of the thread. Replay: the next record is copied back
 * instead, with no syscall. Either way, a syscall this code does not take
 * (returns 0) goes back to the original `syscall` instruction: traced.
 *
 * Built freestanding, linked at SBUF_BASE, no data of its own: all state
 * is in the control page. The layout constants are repeated in sbuf.rs.
 */
typedef unsigned long u64;
typedef unsigned int u32;
typedef long i64;

#define SBUF_BASE 0x200000000000UL
#define CTL (SBUF_BASE + 0x10000UL)
#define STACK_TOP (SBUF_BASE + 0x20000UL)
#define DATA (SBUF_BASE + 0x20000UL)
#define REC_HEADER 80

#define MODE_RECORD 1
#define MODE_REPLAY 2

struct ctl {
    u64 magic;
    u32 mode;
    u32 force_slow;   /* record: the recorder wants the next call traced */
    u64 pos;          /* record: bytes used; replay: next record */
    u64 end;          /* replay: bytes available */
    u64 cap;          /* bytes of the data area */
    u64 saved_rsp;    /* the program's stack pointer while on ours */
    u64 records;      /* records made (record) or consumed (replay) */
    u64 pad[9];
    unsigned char read_ok[128];  /* fds (bits) whose reads never block */
    unsigned char write_ok[128]; /* fds (bits) whose writes are buffered */
};

struct rec {
    u32 size;
    u32 nr;
    u64 args[6];
    i64 ret;
    u64 waddr;
    u64 wlen;
};

#define SYS_read 0
#define SYS_write 1
#define SYS_lseek 8
#define SYS_pread64 17
#define SYS_pwrite64 18
#define SYS_getpid 39
#define SYS_gettimeofday 96
#define SYS_clock_gettime 228
#define SYS_newfstatat 262
#define SYS_fstat 5

static inline i64 raw_syscall(u64 nr, const u64 *a) {
    i64 ret;
    register u64 r10 __asm__("r10") = a[3];
    register u64 r8 __asm__("r8") = a[4];
    register u64 r9 __asm__("r9") = a[5];
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a[0]), "S"(a[1]), "d"(a[2]), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

static void copy(unsigned char *d, const unsigned char *s, u64 n) {
    for (u64 i = 0; i < n; i++) {
        __asm__ volatile("" ::: "memory");
        d[i] = s[i];
    }
}

static int fd_bit(const unsigned char *set, u64 fd) {
    return fd < 1024 && (set[fd >> 3] >> (fd & 7)) & 1;
}

/* How many bytes of memory `nr` may write (at *addr), or -1 when it is not
 * buffered with these arguments. */
static i64 writes(const struct ctl *c, u64 nr, const u64 *a, u64 *addr) {
    *addr = 0;
    switch (nr) {
    case SYS_read:
    case SYS_pread64:
        if (!fd_bit(c->read_ok, a[0]))
            return -1;
        *addr = a[1];
        return (i64)a[2] < 0 ? -1 : (i64)a[2];
    case SYS_write:
    case SYS_pwrite64:
        return fd_bit(c->write_ok, a[0]) ? 0 : -1;
    case SYS_lseek:
    case SYS_getpid:
        return 0;
    case SYS_fstat:
        *addr = a[1];
        return 144;
    case SYS_newfstatat:
        *addr = a[2];
        return 144;
    case SYS_clock_gettime:
        *addr = a[1];
        return 16;
    case SYS_gettimeofday:
        if (a[1])
            return -1;
        *addr = a[0];
        return 16;
    }
    return -1;
}

__attribute__((visibility("hidden"), used)) int sbuf_handle(u64 nr, const u64 *args, u64 *result) {
    struct ctl *c = (struct ctl *)CTL;
    unsigned char *data = (unsigned char *)DATA;
    if (c->mode == MODE_REPLAY) {
        if (c->pos + REC_HEADER > c->end)
            return 0;
        struct rec *r = (struct rec *)(data + c->pos);
        if (r->nr != nr || r->size < REC_HEADER || c->pos + r->size > c->end)
            return 0;
        for (int i = 0; i < 6; i++)
            if (r->args[i] != args[i])
                return 0;
        if (r->wlen)
            copy((unsigned char *)r->waddr, (unsigned char *)(r + 1), r->wlen);
        c->pos += r->size;
        c->records++;
        *result = (u64)r->ret;
        return 1;
    }
    if (c->mode != MODE_RECORD || c->force_slow)
        return 0;
    u64 addr;
    i64 max = writes(c, nr, args, &addr);
    if (max < 0)
        return 0;
    u64 room = REC_HEADER + (((u64)max + 7) & ~7UL);
    if (c->pos + room > c->cap)
        return 0;
    i64 ret = raw_syscall(nr, args);
    struct rec *r = (struct rec *)(data + c->pos);
    u64 wlen = 0;
    if (max > 0 && ret >= 0 && addr) {
        if (nr == SYS_read || nr == SYS_pread64)
            wlen = (u64)ret;
        else
            wlen = (u64)max;
        if (wlen > (u64)max)
            wlen = (u64)max;
        copy((unsigned char *)(r + 1), (unsigned char *)addr, wlen);
    }
    r->nr = (u32)nr;
    for (int i = 0; i < 6; i++)
        r->args[i] = args[i];
    r->ret = ret;
    r->waddr = addr;
    r->wlen = wlen;
    r->size = (u32)(REC_HEADER + ((wlen + 7) & ~7UL));
    c->pos += r->size;
    c->records++;
    *result = (u64)ret;
    return 1;
}

/* Entry from a stub: [rsp] = the stub's return address, [rsp+8] = the
 * syscall number; arguments in registers; rax, rcx and r11 are free (a
 * syscall clobbers them). Runs on a stack of its own (the program's
 * memory below its red zone only gets the stub's two words and the
 * flags), returns to the stub's slow point (ret) or its done point
 * (ret + 18) with rax = the result, every other register and the flags
 * as they were, rcx and r11 as a syscall leaves them. */
__asm__(".section .text.entry,\"ax\"\n"
        ".globl sbuf_entry\n"
        "sbuf_entry:\n"
        "  pushfq\n"
        "  mov %rsp, %rax\n"
        "  movabs %rax, 0x200000010028\n"
        "  movabs $0x200000020000, %rsp\n"
        "  push %rbx\n"
        "  push %r9\n push %r8\n push %r10\n push %rdx\n push %rsi\n push %rdi\n"
        "  sub $8, %rsp\n"
        "  mov 16(%rax), %rdi\n"
        "  lea 8(%rsp), %rsi\n"
        "  mov %rsp, %rdx\n"
        "  call sbuf_handle\n"
        "  mov %eax, %r11d\n"
        "  mov (%rsp), %rcx\n"
        "  add $8, %rsp\n"
        "  pop %rdi\n pop %rsi\n pop %rdx\n pop %r10\n pop %r8\n pop %r9\n"
        "  pop %rbx\n"
        "  movabs 0x200000010028, %rax\n"
        "  mov %rax, %rsp\n"
        "  test %r11d, %r11d\n"
        "  jz 1f\n"
        "  addq $18, 8(%rsp)\n"
        "1:\n"
        "  mov %rcx, %rax\n"
        "  popfq\n"
        "  mov (%rsp), %rcx\n"
        "  pushfq\n"
        "  pop %r11\n"
        "  ret\n"
        ".text\n");
