/* replay.c: runs a fuzz target's LLVMFuzzerTestOneInput over files, without libFuzzer, so
 * that `make test` (and check-asan) replay every regression and corpus input with the
 * target's own checks. A failed check aborts, as under libFuzzer.
 * Usage: replay_<target> DIR_OR_FILE...   (strict-* files only with FUZZ_STRICT=1) */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int strict(void) {
  const char *e = getenv("FUZZ_STRICT");
  return e && *e && strcmp(e, "0") != 0;
}

/* Feeds one file to the target; returns 1 when it was an input, 0 when skipped. */
static int replay_file(const char *path) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  if (base[0] == '.' || strncmp(base, "README", 6) == 0 || strstr(base, ".md")) return 0;
  if (strncmp(base, "strict-", 7) == 0 && !strict()) return 0; /* design findings: see fuzz/README.md */
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    exit(2);
  }
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0, n;
  do {
    if (len == cap && !(buf = realloc(buf, cap = cap ? cap * 2 : 4096))) abort();
    n = fread(buf + len, 1, cap - len, f);
    len += n;
  } while (n > 0);
  fclose(f);
  /* A copy of exactly len bytes, so ASan sees a read past the input. */
  uint8_t *in = malloc(len ? len : 1);
  if (!in) abort();
  memcpy(in, buf, len);
  free(buf);
  LLVMFuzzerTestOneInput(in, len);
  free(in);
  return 1;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
  int inputs = 0;
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  for (int i = 1; i < argc; i++) {
    struct stat sb;
    if (stat(argv[i], &sb) != 0) continue; /* an empty regressions directory is not in git */
    if (!S_ISDIR(sb.st_mode)) {
      inputs += replay_file(argv[i]);
      continue;
    }
    DIR *d = opendir(argv[i]);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0;
    while (d && (e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      if (!(names = realloc(names, (n + 1) * sizeof *names))) abort();
      size_t l = strlen(argv[i]) + strlen(e->d_name) + 2;
      if (!(names[n] = malloc(l))) abort();
      snprintf(names[n++], l, "%s/%s", argv[i], e->d_name);
    }
    if (d) closedir(d);
    if (n) qsort(names, n, sizeof *names, by_name); /* the same order on every machine; qsort wants a non-NULL array */
    for (size_t j = 0; j < n; j++) {
      inputs += replay_file(names[j]);
      free(names[j]);
    }
    free(names);
  }
  printf("replayed %d inputs\n", inputs);
  return 0;
}
