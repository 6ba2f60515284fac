"""A fork server for the tests' plain Python runs: ``run_python(["manage.py", ...], env, cwd)``.

Each ``python manage.py ...`` a test starts spends about half a second of CPU importing Django, psycopg and the
standard library before it does anything. Here one long-lived interpreter per pytest-xdist worker (the zygote)
imports those libraries once, and forks a child per command line; the child takes the command line's
environment, folder, ``sys.argv`` and ``sys.path`` as a fresh interpreter would, then runs the code: the
settings, the project and everything that reads the environment are imported by the child, with its own
environment. The zygote imports nothing that reads the environment at import time (never the settings,
``deploy``, ``apps``, the Kubernetes client or boto3), and it is single-threaded, so a fork copies no lock
another thread holds.

Plain runs only: a run whose environment asks the interpreter for something a fork cannot give (``PYTHON*``
variables other than ``PYTHONPATH``, ``PYTHONUNBUFFERED`` and ``PYTHONDONTWRITEBYTECODE``; another locale; a
variable a pre-imported library reads at import) gets a real interpreter, through ``subprocess.run``. A test
that needs the process itself (its pid, a signal, a pipe it reads while the process runs) uses ``subprocess``.
So does a test that compares runs for an order string hashing decides (the children share the zygote's hash
seed, where real interpreters draw one each: a set's order the same in every forked run), or that reads what a
process the run started writes after the run ends (``subprocess.run`` waits for its pipes to close; a forked
run's output is what was written when the child exited).
"""

import builtins
import contextlib
import importlib
import importlib.machinery
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import types

PYTHON = sys.executable
PRELOADED = (
    "django",
    "django.core.management",
    "django.db.models",
    "django.http",
    "django.urls",
    "django.forms",
    "django.template",
    "psycopg",
)
# Read by the interpreter at start-up, and honoured by the child; any other PYTHON* variable means a real one.
HONOURED = frozenset({"PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})
# Read at import by a pre-imported library (psycopg picks its implementation and its wait function).
READ_AT_IMPORT = frozenset({"PSYCOPG_IMPL", "PSYCOPG_WAIT_FUNC"})
LOCALE = ("LC_ALL", "LC_CTYPE", "LANG")
MAX_MESSAGE = 1 << 20

# --- in the test process ----------------------------------------------------------------------------------------

_lock = threading.Lock()  # one run at a time per worker: the zygote serves one request after the other
_zygote = None
_children_cpu = 0.0


def run_python(args, env=None, cwd=None, timeout=None, check=False):
    """``subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, ...)``, forked.

    ``args`` is what follows the interpreter: ``["manage.py", ...]``, ``["-m", "django", ...]`` or
    ``["-c", code, ...]``. Returns a ``subprocess.CompletedProcess``; raises ``subprocess.TimeoutExpired``
    (the child killed) after ``timeout`` seconds, and with ``check`` ``subprocess.CalledProcessError``.
    """
    args = [os.fspath(arg) for arg in args]
    env = {str(key): os.fsdecode(value) for key, value in (os.environ if env is None else env).items()}
    cwd = os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd())
    command = [PYTHON, *args]
    if not forkable(args, env, cwd):
        return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=check)
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as asked:
        # The request in a file, not in the message: a socket's message is bounded by its buffer (about 200 kB),
        # a command line and its environment only by ARG_MAX.
        request = {"args": args, "env": env, "cwd": cwd, "timeout": timeout}
        asked.write(json.dumps(request).encode())
        asked.flush()
        with _lock:
            reply = _ask(request, asked.fileno(), out.fileno(), err.fileno())
        if reply["timed_out"]:
            # As subprocess.run's: what the child wrote before it was killed, as bytes, or None.
            written = [_bytes(file) or None for file in (out, err)]
            raise subprocess.TimeoutExpired(command, timeout, output=written[0], stderr=written[1])
        stdout, stderr = _text(out), _text(err)
    done = subprocess.CompletedProcess(command, reply["returncode"], stdout, stderr)
    if check and done.returncode:
        sys.stderr.write(stderr)  # what the real process would have left in the test's captured output
        done.check_returncode()
    return done


def forkable(args, env, cwd):
    """Whether a forked child can be what ``python *args`` would be with ``env`` in ``cwd``."""
    if not args or not os.path.isdir(cwd):
        return False
    if args[0] in ("-c", "-m"):
        if len(args) < 2:
            return False
    elif args[0].startswith("-") or not os.path.isfile(os.path.join(cwd, args[0])):
        return False
    if any(name.startswith("PYTHON") and name not in HONOURED for name in env) or READ_AT_IMPORT & set(env):
        return False
    return _ctype(env) is not None and _ctype(env) == _ctype(_zygote_env())


def children_cpu():
    """CPU seconds (user and system) of the children the running zygote has run and reaped so far.

    Once the zygote itself is reaped (``stop``) they are in this process's RUSAGE_CHILDREN, with the zygote's
    own: the count starts again from 0, so that the sum of the two counts each second once.
    """
    return _children_cpu


def zygote_pid():
    """The running zygote's pid, or None."""
    return _zygote.process.pid if _zygote and _zygote.process.poll() is None else None


def stop():
    """End the zygote (it exits when its socket closes) and reap it, so that its CPU counts as this process's."""
    global _zygote, _children_cpu
    if _zygote is None:
        return
    zygote, _zygote = _zygote, None
    zygote.sock.close()
    try:
        zygote.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        zygote.process.kill()
        zygote.process.wait()
    _children_cpu = 0.0  # now in RUSAGE_CHILDREN (see children_cpu)


# Started as ``python -c``, its folder ('') taken off the path: as a script, this file's folder (tests/) would
# come first in the path, and a module there could stand in for a library's (tests/settings.py for ``settings``).
_START = "import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"


class _Zygote:
    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [PYTHON, "-c", _START, os.path.abspath(__file__), str(theirs.fileno())],
                env=_zygote_env(),
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
            )
        self.sock = ours
        if self.sock.recv(16) != b"ready":
            self.process.wait()
            raise RuntimeError(f"the fork server did not start (exit {self.process.returncode}); its stderr is above")


def _ask(request, asked, out, err):
    global _zygote, _children_cpu
    for attempt in (1, 2):
        if _zygote is None or _zygote.process.poll() is not None:
            if _zygote is not None:
                stop()
            _zygote = _Zygote()
        try:
            socket.send_fds(_zygote.sock, [b"run"], [asked, out, err])
            break
        except OSError:  # it died since it was last asked: start another, once
            stop()
            if attempt == 2:
                raise
    answer = _zygote.sock.recv(MAX_MESSAGE)
    if not answer:
        stop()
        raise RuntimeError("the fork server died while running " + " ".join(request["args"])[:200])
    reply = json.loads(answer)
    _children_cpu += reply["cpu"]
    return reply


def _bytes(file):
    file.seek(0)
    return file.read()


def _text(file):
    """The bytes a child wrote, as ``subprocess.run(..., text=True)`` decodes them (universal newlines)."""
    import locale

    text = _bytes(file).decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _zygote_env():
    """The zygote's environment: a path and this process's locale, which its start-up reads; nothing else."""
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    env.update({name: os.environ[name] for name in LOCALE if name in os.environ})
    return env


def _ctype(env):
    """The LC_CTYPE locale an interpreter started with ``env`` runs in, or None where this file cannot tell.

    In the C locale, unless LC_ALL forces it, the start-up coerces LC_CTYPE to C.UTF-8 (PEP 538).
    """
    if env.get("LC_ALL"):
        return None if _is_c(env["LC_ALL"]) else env["LC_ALL"]
    name = env.get("LC_CTYPE") or env.get("LANG") or "C"
    return "C.UTF-8" if _is_c(name) else name


def _is_c(name):
    return name in ("C", "POSIX")


# --- in the zygote ----------------------------------------------------------------------------------------------


def serve(fd):
    """Fork a child per request on ``fd``, wait for it, answer; return when the test process closes the socket."""
    for name in PRELOADED:
        importlib.import_module(name)
    base_path = list(sys.path)  # the interpreter's own entries (a run adds its first and PYTHONPATH's)
    import gc

    gc.freeze()  # what the libraries made, out of the children's collections (and their end's: ``_free``)
    sock = socket.socket(fileno=fd)
    sock.send(b"ready")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 3)
        except ConnectionError:
            return
        if not message:
            return
        asked, *fds = fds
        with open(asked, "rb") as file:
            file.seek(0)
            request = json.load(file)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            sock.close()
            _child(request, *fds, base_path)  # never returns
        for fd_ in fds:
            os.close(fd_)
        sock.send(json.dumps(_wait(pid, request["timeout"])).encode())


def _wait(pid, timeout):
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        if not ready:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        os.close(pidfd)
    _, status, usage = os.wait4(pid, 0)
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "timed_out": not ready,
        "cpu": usage.ru_utime + usage.ru_stime,
    }


def _child(request, out, err, base_path):
    code = 1
    try:
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)
        code = _interpret(request["args"], request["env"], request["cwd"], base_path)
    except BaseException:  # the fork server's own failure (a folder gone, say): said where the run's errors go
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _interpret(args, env, cwd, base_path):
    """What the interpreter does with ``args``, from setting up its process to the exit status it ends with."""
    os.environ.clear()
    os.environ.update(env)
    if not env.get("LC_ALL") and _is_c(env.get("LC_CTYPE") or env.get("LANG") or "C"):
        os.environ["LC_CTYPE"] = "C.UTF-8"  # PEP 538: the C locale coerced, and said so to the children
    time.tzset()  # time.timezone and time.tzname from the run's TZ, as the time module's start-up sets them
    os.chdir(cwd)
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    # The zygote's encoding and error handler: its LC_CTYPE is the run's (``forkable``), and the interpreter derives
    # both from it (surrogateescape in C.UTF-8, as here; strict in another UTF-8 locale).
    encoding, errors = sys.stdout.encoding, sys.stdout.errors
    sys.stdout = sys.__stdout__ = _stream(1, encoding, errors, unbuffered, line_buffering=False)
    sys.stderr = sys.__stderr__ = _stream(2, encoding, "backslashreplace", unbuffered, line_buffering=True)
    python_path = [os.path.abspath(entry) for entry in env.get("PYTHONPATH", "").split(os.pathsep)]
    python_path = python_path if env.get("PYTHONPATH") else []
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.orig_argv = [PYTHON, *args]
    if args[0] == "-c":
        path0, sys.argv = "", ["-c", *args[2:]]
        main.__loader__ = importlib.machinery.BuiltinImporter
        run = _exec(lambda: compile(args[1], "<string>", "exec"), main)
    elif args[0] == "-m":
        import runpy

        path0, sys.argv = os.getcwd(), ["-m", *args[2:]]  # runpy puts the module's file in argv[0]

        def run():
            runpy._run_module_as_main(args[1], alter_argv=True)  # what ``python -m`` itself calls
    else:
        script = os.path.abspath(args[0])
        path0, sys.argv = os.path.dirname(os.path.realpath(script)), list(args)
        main.__file__, main.__cached__ = script, None
        main.__loader__ = importlib.machinery.SourceFileLoader("__main__", script)
        run = _exec(lambda: compile(_read(script), script, "exec"), main)
    sys.path[:] = [path0, *python_path, *base_path]
    importlib.invalidate_caches()
    try:
        run()
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc)
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next  # this file's frames: a real interpreter has none of them
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)  # the hook prints the exception's own traceback
        code = -signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 1
    return _finalize(code)


def _exec(compiled, module):
    def run():
        exec(compiled(), module.__dict__)  # compiled here, so that a SyntaxError is reported as Python reports it

    return run


def _read(path):
    with open(path, "rb") as source:
        return source.read()


def _stream(fd, encoding, errors, unbuffered, line_buffering):
    import io

    binary = open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)  # noqa: SIM115 - the stream lives on
    return io.TextIOWrapper(
        binary, encoding=encoding, errors=errors, line_buffering=line_buffering, write_through=unbuffered
    )


def _exit_status(exc):
    """What a real interpreter exits with for an uncaught ``SystemExit``: its code, or 1 after printing it."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _finalize(code):
    """The interpreter's end: wait for non-daemon threads, run atexit's functions, flush the standard streams."""
    import atexit

    threading._shutdown()
    atexit._run_exitfuncs()
    _free()
    for stream in (sys.stderr, sys.stdout):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = 120
    if code == -signal.SIGINT:  # an uncaught KeyboardInterrupt ends the process by the signal (bpo-1054041)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def _free():
    """What the interpreter's finalization frees, as far as a run can tell: ``__main__``'s globals (a file the run
    left open flushed and closed, an object's ``__del__`` run), then what a collection finds; other files still
    open flushed, as their closing at the end would. ``os._exit`` would lose what their buffers hold.
    """
    import gc
    import io

    main = sys.modules.get("__main__")
    if main is not None:
        main.__dict__.clear()
    gc.collect()
    files = (io.TextIOWrapper, io.BufferedWriter, io.BufferedRandom)
    for thing in gc.get_objects():
        # type(), not isinstance(): that asks a lazy object (Django's admin.site) for __class__, which sets it up.
        if issubclass(type(thing), files) and not thing.closed:
            with contextlib.suppress(OSError, ValueError):  # as at a real interpreter's end: the status stands
                thing.flush()


if __name__ == "__main__":
    serve(int(sys.argv[-1]))
