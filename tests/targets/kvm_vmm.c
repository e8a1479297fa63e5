// A tiny VMM: 64-bit KVM guests (1 or 2 vCPUs, one thread each) compute checksums over guest memory, report progress through port I/O (out) and read a reply from the VMM (in).
//
// usage: kvm_vmm [ITERATIONS (100000)] [MEM_MIB (64)] [VCPUS (1)] [REPORT_EVERY_LOG2 (12)]
//                [OUT_DELAY_US (0): time spent handling each report (out) exit]
//                [IN_DELAY_US (0): time spent before answering each reply (in) exit]
// With KVM_VMM_IRQCHIP set in the environment the VM also gets an in-kernel
// irqchip and PIT.
// After each report the guest reads a 32-bit reply from port 0x12 and mixes
// it into its state, so a lost, repeated or wrong reply changes every later
// checksum.
// Each vCPU runs the same guest code over its own half of guest memory (from
// 2 MiB up), so what it computes does not depend on how the threads
// interleave; every report line names its vCPU. Exit 0 after every vCPU
// halted; the last lines give each vCPU's final 64-bit checksum.
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define PORT_REPORT 0x10
#define PORT_DONE 0x11
#define PORT_REPLY 0x12
#define CODE_AT 0x10000
#define DATA_AT 0x200000ull

/* Guest code: rdi = vcpu id, rsi = data base, r10 = word mask, rcx =
 * iterations, r8 = report mask. Position independent. */
extern const unsigned char guest_code[], guest_code_end[];
__asm__(".pushsection .rodata\n"
        "guest_code:\n"
        "  lea 1(%rdi), %rbx\n"
        "  movabs $0x9e3779b97f4a7c15, %rax\n"
        "  imul %rax, %rbx\n"
        "  xor %r9, %r9\n"
        "  xor %r11, %r11\n"
        "1:\n"
        "  movabs $6364136223846793005, %rax\n"
        "  imul %rax, %rbx\n"
        "  movabs $1442695040888963407, %rax\n"
        "  add %rax, %rbx\n"
        "  mov %rbx, %rax\n"
        "  shr $33, %rax\n"
        "  and %r10, %rax\n"
        "  xor %rbx, (%rsi,%rax,8)\n"
        "  add (%rsi,%rax,8), %r11\n"
        "  rol $7, %r11\n"
        "  inc %r9\n"
        "  mov %r9, %rax\n"
        "  and %r8, %rax\n"
        "  jnz 2f\n"
        "  mov %r11d, %eax\n"
        "  mov $0x10, %dx\n"
        "  out %eax, (%dx)\n"
        "  mov $0x12, %dx\n"
        "  in (%dx), %eax\n"
        "  xor %rax, %rbx\n"
        "2:\n"
        "  cmp %rcx, %r9\n"
        "  jb 1b\n"
        "  mov $0x11, %dx\n"
        "  mov %r11d, %eax\n"
        "  out %eax, (%dx)\n"
        "  shr $32, %r11\n"
        "  mov %r11d, %eax\n"
        "  out %eax, (%dx)\n"
        "  hlt\n"
        "  jmp .\n"
        "guest_code_end:\n"
        ".popsection\n");

static int kvm, vm;
static size_t run_size;
static unsigned out_delay_us, in_delay_us;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void die(const char *what) {
    fprintf(stderr, "kvm_vmm: %s: %s\n", what, strerror(errno));
    exit(2);
}

struct vcpu {
    int id, fd;
    struct kvm_run *run;
    uint64_t iterations, data, words, report_mask;
};

static void say(const char *fmt, int id, unsigned a, unsigned b) {
    pthread_mutex_lock(&out_lock);
    printf(fmt, id, a, b);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

static void *vcpu_main(void *arg) {
    struct vcpu *v = arg;
    unsigned reports = 0, done_words = 0;
    uint32_t done[2] = {0, 0};
    for (;;) {
        if (ioctl(v->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            die("KVM_RUN");
        }
        struct kvm_run *r = v->run;
        switch (r->exit_reason) {
        case KVM_EXIT_IO: {
            uint32_t val;
            if (r->io.size != 4 || r->io.count != 1) {
                fprintf(stderr, "kvm_vmm: unexpected I/O on port %#x\n", r->io.port);
                exit(3);
            }
            if (r->io.direction == KVM_EXIT_IO_IN) {
                if (r->io.port != PORT_REPLY) {
                    fprintf(stderr, "kvm_vmm: unexpected in from port %#x\n", r->io.port);
                    exit(3);
                }
                if (in_delay_us)
                    usleep(in_delay_us);
                val = reports * 2654435761u + (unsigned)v->id;
                memcpy((char *)r + r->io.data_offset, &val, 4);
                break;
            }
            memcpy(&val, (char *)r + r->io.data_offset, 4);
            if (r->io.port == PORT_REPORT) {
                reports++;
                say("vcpu %d report %u checksum %08x\n", v->id, reports, val);
                if (out_delay_us)
                    usleep(out_delay_us);
            } else if (r->io.port == PORT_DONE && done_words < 2) {
                done[done_words++] = val;
                /* The guest halts next; with an in-kernel irqchip KVM
                 * keeps a halted vCPU to itself, so stop here. */
                if (done_words == 2) {
                    say("vcpu %d halted, checksum %08x%08x\n", v->id, done[1], done[0]);
                    return NULL;
                }
            }
            break;
        }
        case KVM_EXIT_HLT:
            say("vcpu %d halted, checksum %08x%08x\n", v->id, done[1], done[0]);
            return NULL;
        case KVM_EXIT_INTR:
            break;
        default:
            fprintf(stderr, "kvm_vmm: vcpu %d: exit reason %u\n", v->id, r->exit_reason);
            exit(3);
        }
    }
}

/* The end: a function of its own, for debugger tests to stop in. */
__attribute__((noinline)) static void done(uint64_t memory_hash) {
    printf("vmm: guest memory hash %016llx\n", (unsigned long long)memory_hash);
    printf("vmm: done\n");
}

int main(int argc, char **argv) {
    uint64_t iterations = argc > 1 ? strtoull(argv[1], 0, 0) : 100000ull;
    uint64_t mem_mib = argc > 2 ? strtoull(argv[2], 0, 0) : 64;
    int nvcpus = argc > 3 ? atoi(argv[3]) : 1;
    int report_log2 = argc > 4 ? atoi(argv[4]) : 12;
    out_delay_us = argc > 5 ? (unsigned)atoi(argv[5]) : 0;
    in_delay_us = argc > 6 ? (unsigned)atoi(argv[6]) : 0;
    if (mem_mib < 4 || mem_mib > 1024 || nvcpus < 1 || nvcpus > 2) {
        fprintf(stderr, "kvm_vmm: MEM_MIB must be 4..1024, VCPUS 1 or 2\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("open /dev/kvm");
    vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die("KVM_CREATE_VM");
    size_t mem_size = mem_mib << 20;
    unsigned char *mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED)
        die("mmap guest memory");
    if (getenv("KVM_VMM_IRQCHIP")) {
        /* An in-kernel interrupt controller and timer, as real VMMs make
         * them (the guest never enables interrupts). */
        if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0)
            die("KVM_SET_TSS_ADDR");
        if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
            die("KVM_CREATE_IRQCHIP");
        struct kvm_pit_config pit = {.flags = 0};
        if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0)
            die("KVM_CREATE_PIT2");
    }
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = mem_size,
        .userspace_addr = (uint64_t)(uintptr_t)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        die("KVM_SET_USER_MEMORY_REGION");
    /* Identity map of the first GiB with 2 MiB pages. */
    uint64_t *pml4 = (uint64_t *)(mem + 0x1000), *pdpt = (uint64_t *)(mem + 0x2000),
             *pd = (uint64_t *)(mem + 0x3000);
    pml4[0] = 0x2000 | 3;
    pdpt[0] = 0x3000 | 3;
    for (int i = 0; i < 512; i++)
        pd[i] = ((uint64_t)i << 21) | 0x83;
    memcpy(mem + CODE_AT, guest_code, guest_code_end - guest_code);

    run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if ((long)run_size <= 0)
        die("KVM_GET_VCPU_MMAP_SIZE");
    /* Data area: from 2 MiB, split between the vCPUs, a power of two each. */
    uint64_t per = 1;
    while (per * 2 <= (mem_size - DATA_AT) / nvcpus)
        per *= 2;
    struct vcpu vcpus[2];
    for (int i = 0; i < nvcpus; i++) {
        struct vcpu *v = &vcpus[i];
        v->id = i;
        v->fd = ioctl(vm, KVM_CREATE_VCPU, i);
        if (v->fd < 0)
            die("KVM_CREATE_VCPU");
        v->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
        if (v->run == MAP_FAILED)
            die("mmap kvm_run");
        struct kvm_sregs s;
        if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
            die("KVM_GET_SREGS");
        struct kvm_segment code = {.base = 0, .limit = 0xffffffff, .selector = 8, .type = 11,
                                   .present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1};
        struct kvm_segment data = {.base = 0, .limit = 0xffffffff, .selector = 16, .type = 3,
                                   .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1};
        s.cs = code;
        s.ds = s.es = s.fs = s.gs = s.ss = data;
        s.cr3 = 0x1000;
        s.cr4 = 0x20;              /* PAE */
        s.cr0 = 0x80000001 | 0x20; /* PG | PE | NE */
        s.efer = 0x500;            /* LME | LMA */
        if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
            die("KVM_SET_SREGS");
        v->iterations = iterations;
        v->data = DATA_AT + (uint64_t)i * per;
        v->words = per / 8;
        v->report_mask = (1ull << report_log2) - 1;
        /* The host fills the guest's data: all of guest memory matters. */
        uint64_t *words = (uint64_t *)(mem + v->data), x = 0x1234567 + (uint64_t)i;
        for (uint64_t w = 0; w < v->words; w++) {
            x += 0x9e3779b97f4a7c15ull;
            uint64_t z = x;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            words[w] = z ^ (z >> 27);
        }
        struct kvm_regs regs = {
            .rip = CODE_AT, .rflags = 2, .rdi = (uint64_t)i, .rsi = v->data,
            .r10 = v->words - 1, .rcx = iterations, .r8 = v->report_mask, .rsp = 0x8000};
        if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
            die("KVM_SET_REGS");
    }
    printf("vmm: %d vcpu(s), %llu MiB, %llu iterations\n", nvcpus,
           (unsigned long long)mem_mib, (unsigned long long)iterations);
    pthread_t threads[2];
    for (int i = 0; i < nvcpus; i++)
        if (pthread_create(&threads[i], NULL, vcpu_main, &vcpus[i]) != 0)
            die("pthread_create");
    for (int i = 0; i < nvcpus; i++)
        pthread_join(threads[i], NULL);
    /* What the guests left in their memory. */
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < nvcpus; i++) {
        const uint64_t *w = (const uint64_t *)(mem + vcpus[i].data);
        for (uint64_t k = 0; k < vcpus[i].words; k++)
            h = (h ^ w[k]) * 0x100000001b3ull;
    }
    done(h);
    return 0;
}
