/*
 * transcript.c - ceremony transcripts: what was done, when, by whom, on
 * which token, with the identifiers (URIs, KCVs, fingerprints) witnesses
 * compare against the HSM. Printed as text for signing on paper, or as the
 * "transcript" member of the --json document.
 */
#include "config.h"

#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static void tr_field(struct cli *cli, const char *field, const char *value)
{
	if (cli->json) {
		json_t *item = cj_obj(cli->transcript, NULL);

		cj_str(item, "field", field);
		cj_str(item, "value", value);
	} else {
		printf("  %-22s %s\n", field, value);
	}
}

void cli_transcript_begin(struct cli *cli, const char *ceremony)
{
	char date[32] = "unknown", host[256] = "unknown", who[300];
	const struct passwd *pw = getpwuid(geteuid());
	time_t now = time(NULL);
	struct tm tm;

	if (gmtime_r(&now, &tm))
		strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (gethostname(host, sizeof(host) - 1) != 0)
		strcpy(host, "unknown");
	host[sizeof(host) - 1] = '\0';
	snprintf(who, sizeof(who), "%s (uid %lu) on %s", pw ? pw->pw_name : "?",
	         (unsigned long)geteuid(), host);

	if (cli->json) {
		json_t *t = cj_obj(cli->out, "transcript");

		cj_str(t, "ceremony", ceremony);
		cj_str(t, "date", date);
		cj_str(t, "operator", who);
		cj_str(t, "token", cli_redact(cli->token));
		cli->transcript = cj_arr(t, "items");
		return;
	}
	printf("==== hsmwrap ceremony transcript: %s ====\n", ceremony);
	tr_field(cli, "Date (UTC):", date);
	tr_field(cli, "Operator:", who);
	tr_field(cli, "Token:", cli->token ? cli_redact(cli->token) : "(first token with the key)");
}

void cli_transcript_line(struct cli *cli, const char *field, const char *fmt, ...)
{
	char value[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(value, sizeof(value), fmt, ap);
	va_end(ap);
	tr_field(cli, field, value);
}

void cli_transcript_end(struct cli *cli)
{
	if (cli->json) {
		cli->transcript = NULL;
		return;
	}
	printf("  Signatures (print, compare the values above with the HSM, sign):\n");
	printf("    Operator: ______________________________  Date: ____________\n");
	printf("    Witness:  ______________________________  Date: ____________\n");
	printf("    Witness:  ______________________________  Date: ____________\n");
	printf("==== end of transcript ====\n");
}
