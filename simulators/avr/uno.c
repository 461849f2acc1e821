/*
 * An Arduino Uno under emulation: libsimavr runs an ATmega328P at 16 MHz from the real Optiboot
 * bootloader (BOOTRST: every reset starts at the boot section), UART0 is bridged to a pseudo-terminal,
 * and the Uno's auto-reset is emulated the way its USB-serial chip and reset capacitor do it.
 *
 *   uno --boot optiboot_atmega328.hex [--flash FILE] [--link PATH] [--status FILE]
 *
 * Auto-reset. On a Uno the USB-serial chip drives DTR# through a 100 nF capacitor into RESET: the
 * falling edge of DTR# (DTR asserted) pulses RESET low; the rising edge does nothing. Linux asserts
 * DTR when a port is opened, and drops it while the speed is B0 (a "hang-up"; pyserial's dtr=False
 * and avrdude's DTR toggle do the same on a real port). A pty has no modem lines, so the bridge derives
 * DTR from the two things the master side can see of the slave:
 *   - open/closed: every open and close of the slave by a process (the master's poll() reports
 *     POLLHUP while nobody holds it, but only as a level);
 *   - the slave's termios, which tcgetattr() on the master returns: output speed B0 = DTR dropped.
 * Opens and closes are counted from inotify events on the slave (IN_OPEN, IN_CLOSE): POLLHUP alone is a
 * level, and a close followed at once by an open (an agent reconnecting) falls between two samples.
 * DTR = (slave open) and (speed != B0). Every rising edge of DTR is an external reset: the chip's
 * registers reset, MCUSR gets EXTRF (Optiboot only waits for a host after an external reset), and
 * execution restarts at the boot section.
 *
 * The bridge is this file's own (~100 lines) rather than simavr's uart_pty part: uart_pty keeps the
 * slave end open (so an open by the host can never be seen), exchanges bytes from a second thread
 * through a FIFO its own comments call racy, and spins on EIO when nobody holds the slave.
 * Here one thread runs the CPU and services the pty between instructions, every POLL_US of
 * simulated time.
 *
 * Timing. Simulated time never runs ahead of the wall clock (Optiboot's 1 s window and the host's
 * timeouts stay real); on a loaded machine it may fall behind, and the baseline then slips rather
 * than letting the chip race to catch up.
 *
 * Status. With --status, a small text file (rewritten atomically when something changes) reports
 * resets, the bytes the chip received while executing the bootloader and the application, and the
 * I/O port registers (DDRx/PORTx) so tests can see the pins as the silicon drives them.
 * With --flash, the flash is loaded from FILE at start and written back on SIGTERM/SIGINT.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_hex.h"

#define FREQUENCY 16000000UL
#define POLL_US 100    /* the pty is serviced every 100 us of simulated time (~1 byte at 115200) */
#define AHEAD_US 1000  /* sleep once simulated time is this far ahead of the wall clock */
#define BEHIND_US 50000 /* further behind than this, the baseline slips */
#define QUEUE 4096

/* I/O registers (data-space addresses) of ports B, C and D on the ATmega328P */
enum { DDRB = 0x24, PORTB = 0x25, DDRC = 0x27, PORTC = 0x28, DDRD = 0x2A, PORTD = 0x2B };

static volatile sig_atomic_t stop;
static avr_t *avr;
static avr_irq_t *uart_in;
static uint32_t boot_base;
static int master = -1;
static int opens_fd = -1; /* inotify: opens and closes of the slave */
static int open_count;    /* processes holding the slave open */

static uint8_t rxq[QUEUE], txq[QUEUE]; /* host -> chip, chip -> host */
static size_t rx_head, rx_len, tx_len;
static int xon = 1, dtr;
static unsigned long resets, boot_rx, app_rx, dropped_tx;
static int status_dirty = 1;

static void on_signal(int sig) { (void)sig; stop = 1; }

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void uart_out_hook(struct avr_irq_t *irq, uint32_t value, void *param)
{
	(void)irq; (void)param;
	if (!dtr) { /* nobody has the port open: the USB-serial chip drops the byte */
		dropped_tx++;
		return;
	}
	if (tx_len < QUEUE)
		txq[tx_len++] = (uint8_t)value;
	else
		dropped_tx++;
}

static void uart_xon_hook(struct avr_irq_t *irq, uint32_t value, void *param)
{
	(void)irq; (void)value; (void)param;
	xon = 1;
}

static void uart_xoff_hook(struct avr_irq_t *irq, uint32_t value, void *param)
{
	(void)irq; (void)value; (void)param;
	xon = 0;
}

static void external_reset(void)
{
	avr_reset(avr); /* registers to their reset values, pc = reset_pc (the boot section) */
	avr_regbit_set(avr, avr->reset_flags.extrf);
	rx_head = rx_len = 0;
	xon = 1;
	resets++;
	status_dirty = 1;
}

static void write_status(const char *path)
{
	char tmp[1100];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "resets %lu\nboot_rx %lu\napp_rx %lu\ndropped_tx %lu\ndtr %d\nin_bootloader %d\n",
		resets, boot_rx, app_rx, dropped_tx, dtr, avr->pc >= boot_base);
	fprintf(f, "ddrb %u\nportb %u\nddrc %u\nportc %u\nddrd %u\nportd %u\n",
		avr->data[DDRB], avr->data[PORTB], avr->data[DDRC], avr->data[PORTC],
		avr->data[DDRD], avr->data[PORTD]);
	fclose(f);
	rename(tmp, path);
}

static void set_dtr(int now)
{
	if (now && !dtr) {
		dtr = 1;
		external_reset();
	} else if (!now && dtr) {
		dtr = 0;
		tx_len = 0; /* a closed port loses what was in flight */
		status_dirty = 1;
	}
}

/* Between two instructions: move bytes, follow DTR, write the status. */
static void service(void)
{
	struct termios tio;
	int speed_zero = tcgetattr(master, &tio) == 0 && cfgetospeed(&tio) == B0;
	char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	while ((n = read(opens_fd, events, sizeof(events))) > 0) {
		for (char *p = events; p < events + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			if (ev->mask & IN_OPEN)
				open_count++;
			if ((ev->mask & IN_CLOSE) && open_count > 0)
				open_count--;
			set_dtr(open_count > 0 && !speed_zero); /* each edge in order, even a quick close-open */
			p += sizeof(*ev) + ev->len;
		}
	}
	set_dtr(open_count > 0 && !speed_zero);
	struct pollfd pfd = { .fd = master, .events = POLLIN | (tx_len ? POLLOUT : 0) };
	if (poll(&pfd, 1, 0) < 0 || (pfd.revents & POLLHUP))
		return; /* nobody holds the slave: reading the master would only return EIO */
	if ((pfd.revents & POLLIN) && rx_len < QUEUE) {
		size_t tail = (rx_head + rx_len) % QUEUE;
		size_t room = tail >= rx_head ? QUEUE - tail : rx_head - tail;
		ssize_t n = read(master, rxq + tail, room);
		if (n > 0)
			rx_len += (size_t)n;
	}
	while (xon && rx_len) {
		uint8_t byte = rxq[rx_head];
		rx_head = (rx_head + 1) % QUEUE;
		rx_len--;
		if (avr->pc >= boot_base)
			boot_rx++;
		else
			app_rx++;
		status_dirty = 1;
		avr_raise_irq(uart_in, byte);
	}
	if (tx_len && (pfd.revents & POLLOUT)) {
		ssize_t n = write(master, txq, tx_len);
		if (n > 0) {
			memmove(txq, txq + n, tx_len - (size_t)n);
			tx_len -= (size_t)n;
		}
	}
}

static int open_pty(char *name, size_t size)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0)
		return -1;
	if (ptsname_r(m, name, size) != 0)
		return -1;
	fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
	/* Until the slave has been opened once, the master does not report POLLHUP: open and close it
	   so that "nobody holds the port" is what the bridge sees first. */
	int s = open(name, O_RDWR | O_NOCTTY);
	if (s < 0)
		return -1;
	close(s);
	opens_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (opens_fd < 0 || inotify_add_watch(opens_fd, name, IN_OPEN | IN_CLOSE) < 0)
		return -1;
	return m;
}

int main(int argc, char *argv[])
{
	const char *boot_path = NULL, *flash_path = NULL, *link_path = NULL, *status_path = NULL;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--boot"))
			boot_path = argv[i + 1];
		else if (!strcmp(argv[i], "--flash"))
			flash_path = argv[i + 1];
		else if (!strcmp(argv[i], "--link"))
			link_path = argv[i + 1];
		else if (!strcmp(argv[i], "--status"))
			status_path = argv[i + 1];
		else {
			fprintf(stderr, "uno: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (!boot_path) {
		fprintf(stderr, "usage: uno --boot BOOTLOADER.hex [--flash FILE] [--link PATH] [--status FILE]\n");
		return 2;
	}
	avr = avr_make_mcu_by_name("atmega328p");
	if (!avr) {
		fprintf(stderr, "uno: simavr has no atmega328p core\n");
		return 1;
	}
	avr_init(avr);
	avr->frequency = FREQUENCY;
	avr->log = LOG_NONE; /* the erased-flash slide below would log a "crash" on every pass */
	memset(avr->flash, 0xff, avr->flashend + 1); /* an erased chip */
	if (flash_path) {
		FILE *f = fopen(flash_path, "rb");
		if (f) {
			size_t n = fread(avr->flash, 1, avr->flashend + 1, f);
			(void)n;
			fclose(f);
		}
	}
	/* Optiboot's hex has two chunks: the loader at 0x7E00 and its version word at 0x7FFE. */
	ihex_chunk_p chunks = NULL;
	int count = read_ihex_chunks(boot_path, &chunks);
	boot_base = avr->flashend + 1;
	for (int i = 0; i < count; i++) {
		if (chunks[i].baseaddr > avr->flashend)
			continue;
		/* Debian's build carries a few filler bytes past the end of flash: the chip has no room for them */
		uint32_t size = chunks[i].size;
		if (chunks[i].baseaddr + size > avr->flashend + 1)
			size = avr->flashend + 1 - chunks[i].baseaddr;
		memcpy(avr->flash + chunks[i].baseaddr, chunks[i].data, size);
		if (chunks[i].baseaddr < boot_base)
			boot_base = chunks[i].baseaddr;
	}
	if (count <= 0 || boot_base < (avr->flashend + 1) / 2) {
		fprintf(stderr, "uno: cannot load the bootloader %s \n", boot_path);
		return 1;
	}
	free_ihex_chunks(chunks);
	/* The Uno's fuses: low 0xFF, high 0xDE (BOOTRST, 512-byte boot section), extended 0xFD. */
	avr->fuse[0] = 0xFF;
	avr->fuse[1] = 0xDE;
	avr->fuse[2] = 0xFD;
	avr->reset_pc = boot_base;
	avr->pc = boot_base;
	avr->codeend = avr->flashend;

	uint32_t flags = 0;
	avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
	flags &= ~(AVR_UART_FLAG_STDIO | AVR_UART_FLAG_POLL_SLEEP); /* binary data; we keep real time */
	avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
	uart_in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT),
				uart_out_hook, NULL);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON),
				uart_xon_hook, NULL);
	avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF),
				uart_xoff_hook, NULL);

	char slave[128];
	master = open_pty(slave, sizeof(slave));
	if (master < 0) {
		perror("uno: pty");
		return 1;
	}
	if (link_path) {
		unlink(link_path);
		if (symlink(slave, link_path) != 0) {
			perror("uno: symlink");
			return 1;
		}
	}
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	printf("pty %s\n", slave);
	fflush(stdout);

	const avr_cycle_count_t poll_cycles = FREQUENCY / 1000000 * POLL_US;
	avr_cycle_count_t next_poll = avr->cycle + poll_cycles;
	uint64_t base_wall = now_us(), base_cycle = avr->cycle, last_status = 0;
	while (!stop) {
		int state = avr_run(avr);
		if (state == cpu_Crashed && avr->pc < boot_base && avr->flash[avr->pc] == 0xff &&
		    avr->flash[avr->pc + 1] == 0xff) {
			/* Erased flash: the silicon runs through 0xFFFF words into the boot section (simavr
			   calls them invalid opcodes); Optiboot then starts the "application" again. */
			avr->pc = boot_base;
			avr->state = cpu_Running;
			continue;
		}
		if (state == cpu_Done || state == cpu_Crashed) {
			fprintf(stderr, "uno: the CPU stopped (state %d) at pc 0x%04x\n", state, avr->pc);
			break;
		}
		if (avr->cycle < next_poll)
			continue;
		next_poll = avr->cycle + poll_cycles;
		service();
		uint64_t sim = (avr->cycle - base_cycle) / (FREQUENCY / 1000000);
		uint64_t wall = now_us() - base_wall;
		if (sim > wall + AHEAD_US)
			usleep((useconds_t)(sim - wall));
		else if (wall > sim + BEHIND_US)
			base_wall += wall - sim; /* slip: never run faster than real time to catch up */
		if (status_path && wall - last_status > (status_dirty ? 5000u : 100000u)) {
			write_status(status_path);
			status_dirty = 0;
			last_status = wall;
		}
	}
	if (flash_path) {
		FILE *f = fopen(flash_path, "wb");
		if (f) {
			fwrite(avr->flash, 1, avr->flashend + 1, f);
			fclose(f);
		}
	}
	if (link_path)
		unlink(link_path);
	return 0;
}
