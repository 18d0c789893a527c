/*
 * A main() for the libFuzzer harnesses without libFuzzer, so that every
 * `make check` compiles them and runs them over the seed corpus (under
 * ASan/UBSan in the sanitizer build).
 *
 *   fuzz-replay-NAME [FILE|DIR]...
 *
 * Without arguments it replays FUZZ_CORPUS_DIR (set at build time, or in
 * the environment). Besides each input as it is, it feeds every truncation
 * and every single-byte corruption of it: cheap, deterministic, and the
 * classic ways a stored blob goes bad. A failed check aborts.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_MAX_INPUT (1024u * 1024u)
/* Variants grow with the square of the size; big inputs run as they are. */
#define MAX_MUTATED 4096u

static unsigned long inputs, runs;

static void run_one(const uint8_t *data, size_t size)
{
	(void)LLVMFuzzerTestOneInput(data, size);
	runs++;
}

static void run_variants(const uint8_t *data, size_t size)
{
	static const uint8_t flips[] = { 0xff, 0x01, 0x80 };
	uint8_t *buf;
	size_t i, k;

	run_one(data, size);
	if (size > MAX_MUTATED)
		return;
	for (i = 0; i < size; i++)
		run_one(data, i);
	buf = malloc(size ? size : 1);
	if (buf == NULL)
		return;
	for (i = 0; i < size; i++) {
		for (k = 0; k < sizeof(flips); k++) {
			memcpy(buf, data, size);
			buf[i] ^= flips[k];
			run_one(buf, size);
		}
	}
	free(buf);
}

static int replay_file(const char *path)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *data;
	size_t n;

	if (fp == NULL) {
		fprintf(stderr, "fuzz-replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	data = malloc(REPLAY_MAX_INPUT);
	if (data == NULL) {
		fclose(fp);
		return -1;
	}
	n = fread(data, 1, REPLAY_MAX_INPUT, fp);
	fclose(fp);
	run_variants(data, n);
	free(data);
	inputs++;
	return 0;
}

static int replay_path(const char *path)
{
	struct stat st;
	DIR *d;
	struct dirent *de;
	int ret = 0;

	if (stat(path, &st) != 0) {
		fprintf(stderr, "fuzz-replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return replay_file(path);
	d = opendir(path);
	if (d == NULL) {
		fprintf(stderr, "fuzz-replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		char *child;

		if (de->d_name[0] == '.')
			continue;
		if (asprintf(&child, "%s/%s", path, de->d_name) < 0) {
			ret = -1;
			break;
		}
		if (replay_path(child) != 0)
			ret = -1;
		free(child);
	}
	closedir(d);
	return ret;
}

int main(int argc, char **argv)
{
	const char *dflt = getenv("FUZZ_CORPUS_DIR");
	int i, ret = 0;

#ifdef FUZZ_CORPUS_DIR
	if (dflt == NULL || *dflt == '\0')
		dflt = FUZZ_CORPUS_DIR;
#endif
	if (argc > 1) {
		for (i = 1; i < argc; i++)
			if (replay_path(argv[i]) != 0)
				ret = 1;
	} else if (dflt != NULL) {
		ret = replay_path(dflt) != 0;
	} else {
		fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
		return 2;
	}
	if (inputs == 0) {
		fprintf(stderr, "fuzz-replay: no inputs found\n");
		return 1;
	}
	printf("fuzz-replay: %lu inputs, %lu runs including truncations and corruptions\n",
	       inputs, runs);
	return ret;
}
