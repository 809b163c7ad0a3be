/* The pause program: pid 1 of every pod sandbox on a node built by scripts/images (as the image
 * registry.k8s.io/pause:3.10, the name containerd's CRI asks for). It holds the pod's namespaces
 * open, reaps the orphans the kernel hands to it, and exits when the runtime stops the sandbox.
 *
 *   gcc -Os -static -o pause docker/pause.c
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(void) {
    struct sigaction down = {.sa_handler = stop};
    struct sigaction child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    if (sigaction(SIGINT, &down, NULL) || sigaction(SIGTERM, &down, NULL) ||
        sigaction(SIGCHLD, &child, NULL))
        return 1;
    for (;;) pause();
}
