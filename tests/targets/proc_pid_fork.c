// Exercises ids after a restart whose pid was taken: /proc/<getpid()> paths, getpid, and forked children.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t me = getpid();
    for (int step = 0; step < 20; step++) {
        char path[64], comm[64] = "";
        snprintf(path, sizeof path, "/proc/%d/comm", (int)getpid());
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(comm, sizeof comm, f)) comm[strcspn(comm, "\n")] = 0;
            fclose(f);
        }
        // /proc/<getpid()> must be this very process, not another one.
        char dir[64];
        struct stat mine, self;
        snprintf(dir, sizeof dir, "/proc/%d", (int)getpid());
        int same_dir = stat(dir, &mine) == 0 && stat("/proc/self", &self) == 0 && mine.st_ino == self.st_ino;
        pid_t child = fork();
        if (child == 0) {
            // The child's own syscalls must work (even under a filter).
            _exit(getppid() > 0 && access("/proc/self/status", R_OK) == 0 ? 7 : 1);
        }
        int status = 0;
        pid_t waited = waitpid(child, &status, 0);
        printf("step %d: own /proc comm %s, own /proc dir %d, same pid %d, has parent %d, child ok %d\n", step,
               comm[0] ? comm : "(unreadable)", same_dir, getpid() == me, getppid() > 1,
               waited == child && WIFEXITED(status) && WEXITSTATUS(status) == 7);
        usleep(100000);
    }
    return 0;
}
