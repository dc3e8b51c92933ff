/* A QEMU TCG plugin that counts how often each translated block runs.
 *
 * Why: under TCG (the kernel-rxe guest of docs/benchmarks.md) cost does not
 * follow native cycles, so native profiles mislead. Block counts, joined with
 * QEMU's `-d in_asm,op_opt` log by profile.py, say per frame how many blocks
 * ran, which helpers they called and where QEMU had to find the next block by
 * hash (lookup_tb_ptr) instead of jumping to it.
 *
 * Debian's qemu-user has plugin support but ships no qemu-plugin.h, so the
 * few declarations used are written out here from the documented plugin API
 * (QEMU_PLUGIN_VERSION 1, QEMU 7.2). Output: one line per block that ran,
 * "vaddr insns executions symbol", to $TBCOUNT_OUT at exit.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct qemu_info_t qemu_info_t;

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, void (*)(qemu_plugin_id_t, struct qemu_plugin_tb *));
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, int op, void *ptr, uint64_t imm);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, void (*)(qemu_plugin_id_t, void *), void *);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
extern const char *qemu_plugin_insn_symbol(const struct qemu_plugin_insn *);

enum { INLINE_ADD_U64 = 0 };

struct block {
    uint64_t vaddr, insns, runs;
    const char *symbol;
    struct block *next;
};
static struct block *blocks;

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    struct block *b = calloc(1, sizeof *b);
    if (!b)
        return;
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->insns = qemu_plugin_tb_n_insns(tb);
    b->symbol = qemu_plugin_insn_symbol(qemu_plugin_tb_get_insn(tb, 0));
    b->next = blocks;
    blocks = b;
    /* Inline counting: no callback per run. Racy across threads, which
     * only loses a few counts. */
    qemu_plugin_register_vcpu_tb_exec_inline(tb, INLINE_ADD_U64, &b->runs, 1);
}

static void at_exit(qemu_plugin_id_t id, void *unused)
{
    const char *path = getenv("TBCOUNT_OUT");
    FILE *f = fopen(path ? path : "tbcount.txt", "w");
    if (!f)
        return;
    for (struct block *b = blocks; b; b = b->next)
        if (b->runs)
            fprintf(f, "%lx %lu %lu %s\n", (unsigned long)b->vaddr, (unsigned long)b->insns,
                    (unsigned long)b->runs, b->symbol ? b->symbol : "?");
    fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                                               char **argv)
{
    qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
