"""The one pool of threads the copy, the foreign-key validation and the verification share.

Each of them queues its items in a :class:`Work` and runs a few threads that take
items until none is left (the largest first: whoever queues them sorts them). A
thread opens its own connections (Django's are per thread) and the pool closes
them when the thread ends. The first failure, of a thread or of the caller's
block, empties the queue so that the others stop after their current item, and
is raised once every thread has stopped.
"""

import contextlib
import queue
from concurrent.futures import ThreadPoolExecutor

from django.db import connections


class Work:
    """Items that threads take one at a time, in the order they were put, until none is left."""

    def __init__(self, items=()):
        self._queue = queue.Queue()
        for item in items:
            self.put(item)

    def put(self, item):
        self._queue.put(item)

    def __len__(self):
        return self._queue.qsize()

    def __iter__(self):
        """The items left, taken one by one (each by one thread only)."""
        while True:
            try:
                yield self._queue.get_nowait()
            except queue.Empty:
                return

    def clear(self):
        for _ in self:
            pass


@contextlib.contextmanager
def running(worker, count, name, work=None, aliases=()):
    """``count`` threads running ``worker()``, while the block runs in the calling thread.

    Leaving the block waits for every thread and raises the first failure. If the
    block or a thread fails, ``work`` is emptied. Each thread closes its Django
    connections of ``aliases`` when it ends.
    """

    def run():
        try:
            return worker()
        finally:
            for alias in aliases:
                connections[alias].close()

    with ThreadPoolExecutor(max_workers=max(1, count), thread_name_prefix=name) as executor:
        futures = [executor.submit(run) for _ in range(max(1, count))]
        try:
            yield futures
            for future in futures:
                future.result()
        except BaseException:
            if work is not None:
                work.clear()
            raise


def run_workers(worker, count, name, work=None, aliases=()):
    """:func:`running` with nothing to do meanwhile: returns when every thread has."""
    with running(worker, count, name, work, aliases):
        pass


def background(function, name):
    """``function()`` in a thread of its own; its future (the caller does not wait for it)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    future = executor.submit(function)
    executor.shutdown(wait=False)
    return future
