// Exercises a program that runs under user and group ids of its own (set by setpriv, runuser, a server dropping root): it must keep them across a restart.
#define _GNU_SOURCE
#include <grp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < 20; i++) {
        uid_t ru, eu, su;
        gid_t rg, eg, sg;
        gid_t groups[16];
        getresuid(&ru, &eu, &su);
        getresgid(&rg, &eg, &sg);
        int n = getgroups(16, groups);
        printf("round %2d: uids %u %u %u gids %u %u %u dumpable %d groups", i, ru, eu, su, rg, eg,
               sg, prctl(PR_GET_DUMPABLE));
        for (int g = 0; g < n; g++)
            printf(" %u", groups[g]);
        printf("\n");
        usleep(60000);
    }
    return 0;
}
