/*
 * Preloaded into the nested test host's outer QEMU (nested-host.sh): lets QEMU's TCG go on
 * past one assertion that a UEFI guest under KVM inside it trips within seconds.
 *
 * QEMU's TCG emulating AMD SVM (Debian's 7.2, and 10.0 from bookworm-backports too)
 * raises a virtual interrupt from helper_write_crN when a nested guest writes CR8
 * without an intercept while its hypervisor has an interrupt window open, and it does so
 * through cpu_interrupt(), whose TCG handler asserts that the global lock is held; on
 * that path it is not, and QEMU aborts ("tcg_handle_interrupt: assertion failed"). KVM
 * lets a guest write CR8 unintercepted exactly when an interrupt is pending above the
 * task priority, and OVMF writes CR8 on every return from an interrupt (EDK2's
 * exception handler restores it), so OVMF took the whole test host down. Linux guests
 * never write CR8 and never met it.
 *
 * The assertion guards a flag update on the vCPU's own thread (later QEMU does exactly
 * that update with an atomic, without the lock). Returning from the assertion message
 * lets tcg_handle_interrupt do it: the compiler placed the update right after the call.
 * Any other assertion still aborts.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*assertion_fn)(const char *, const char *, int, const char *, const char *);

void g_assertion_message_expr(const char *domain, const char *file, int line,
                              const char *func, const char *expr)
{
    static int reported;
    if (func && expr && strcmp(func, "tcg_handle_interrupt") == 0 &&
        (strstr(expr, "iothread_locked") || strstr(expr, "bql_locked"))) {
        if (!reported++)
            fprintf(stderr, "nested-host shim: went on past QEMU's assertion %s in %s "
                            "(a nested guest's CR8 write; see tcg-bql-shim.c)\n", expr, func);
        return;
    }
    assertion_fn real = (assertion_fn)dlsym(RTLD_NEXT, "g_assertion_message_expr");
    if (real)
        real(domain, file, line, func, expr);
    fprintf(stderr, "%s:%d: %s: assertion failed: (%s)\n", file, line, func, expr);
    abort();
}
