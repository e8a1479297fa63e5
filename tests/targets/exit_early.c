// Exercises a program that exits at once, before any checkpoint can be asked for.
#include <stdio.h>

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("exit_early: bye\n");
    return 0;
}
