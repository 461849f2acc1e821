/*
 * labfleet_connects: a mosquitto 2.0 plugin (interface v5) that tells LabFleet who was refused at CONNECT.
 *
 * mosquitto refuses a revoked device itself (it is gone from the password file and from dynamic-security)
 * and logs only "Client <unknown> disconnected, not authorised.", so LabFleet could not count revoked
 * devices that keep trying (the data-security inspection lists them). This plugin sends LabFleet's unix
 * socket one datagram per refused CONNECT, with the username it tried; it decides nothing.
 *
 * Why MOSQ_EVT_DISCONNECT and not MOSQ_EVT_BASIC_AUTH (checked in mosquitto 2.0.11's source):
 * - A basic-auth callback that answers MOSQ_ERR_PLUGIN_DEFER is harmless (src/security.c,
 *   mosquitto_unpwd_check, moves on to the next plugin and then the password file), but it is called for
 *   more than CONNECTs: on every SIGHUP, mosquitto_security_apply_default (src/security_default.c)
 *   re-checks every client in contexts_by_id, offline persistent sessions included. LabFleet reloads on
 *   every credential change, so a revoked device's old session would count once per reload.
 * - A refused CONNECT is exactly a disconnect whose client has a username and no client id:
 *   handle_connect (src/handle_connect.c) frees the id when mosquitto_unpwd_check fails, and
 *   context__disconnect (src/context.c) then raises MOSQ_EVT_DISCONNECT. A client that was accepted keeps
 *   its id; a session that is already offline raises no second event; a client that never sent a
 *   username is not reported.
 * - Disconnect callbacks' return values are ignored by mosquitto: the plugin cannot change any outcome.
 *
 * - The password is never read, copied or sent.
 * - Datagram: "lfc1" NUL username NUL client-id (empty: it was freed) NUL address, each field at most
 *   FIELD_MAX bytes. A username longer than that is not sent (it cannot be a device identity); a longer
 *   address is cut.
 * - Sent with MSG_DONTWAIT: if LabFleet is not listening or its queue is full the record is dropped and the
 *   broker never waits.
 *
 * Options: plugin_opt_socket <path of LabFleet's unix datagram socket> (required).
 * Build: gcc -shared -fPIC -O2 -o labfleet_connects.so labfleet_connects.c  (Debian: mosquitto-dev)
 * LabFleet builds it itself when the managed mosquitto starts (fleet/runtime/connect_log.py).
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

/* Device identities are short serials; 256 bytes also holds any IPv6 address. */
#define FIELD_MAX 256
#define MAGIC "lfc1"

struct lfc_state {
	mosquitto_plugin_id_t *id;
	int fd;
	struct sockaddr_un addr;
	socklen_t addr_len;
};

static size_t put_field(char *buf, size_t at, const char *value)
{
	size_t n = value ? strnlen(value, FIELD_MAX) : 0;

	buf[at++] = '\0';
	if(n){
		memcpy(buf + at, value, n);
	}
	return at + n;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	struct lfc_state *st = userdata;
	const char *username = mosquitto_client_username(ed->client);
	char buf[sizeof(MAGIC) + 3 * (FIELD_MAX + 1)];
	size_t len;

	(void)event;
	/* Accepted clients keep their id; only a CONNECT refused by authentication has lost it. */
	if(mosquitto_client_id(ed->client) != NULL || username == NULL || strnlen(username, FIELD_MAX + 1) > FIELD_MAX){
		return MOSQ_ERR_SUCCESS;
	}
	memcpy(buf, MAGIC, sizeof(MAGIC) - 1);
	len = sizeof(MAGIC) - 1;
	len = put_field(buf, len, username);
	len = put_field(buf, len, NULL);
	len = put_field(buf, len, mosquitto_client_address(ed->client));
	/* Best effort: nobody listening (ENOENT, ECONNREFUSED) or a full queue (EAGAIN) drops the record. */
	(void)sendto(st->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&st->addr, st->addr_len);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;

	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options, int option_count)
{
	struct lfc_state *st;
	const char *path = NULL;
	int i;
	int rc;

	for(i = 0; i < option_count; i++){
		if(!strcmp(options[i].key, "socket")){
			path = options[i].value;
		}
	}
	if(path == NULL || strlen(path) >= sizeof(st->addr.sun_path)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "labfleet_connects: plugin_opt_socket missing or too long");
		return MOSQ_ERR_INVAL;
	}
	st = calloc(1, sizeof(*st));
	if(st == NULL){
		return MOSQ_ERR_NOMEM;
	}
	st->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if(st->fd < 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "labfleet_connects: socket: %s", strerror(errno));
		free(st);
		return MOSQ_ERR_UNKNOWN;
	}
	st->addr.sun_family = AF_UNIX;
	memcpy(st->addr.sun_path, path, strlen(path) + 1);
	st->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
	st->id = identifier;
	rc = mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, st);
	if(rc != MOSQ_ERR_SUCCESS){
		close(st->fd);
		free(st);
		return rc;
	}
	*userdata = st;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct lfc_state *st = userdata;

	(void)options;
	(void)option_count;
	if(st != NULL){
		mosquitto_callback_unregister(st->id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
		close(st->fd);
		free(st);
	}
	return MOSQ_ERR_SUCCESS;
}
