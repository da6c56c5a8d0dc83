"""Keeps one core busy for a fraction of the time (argv[1], e.g. 0.12): a stand-in for a
client sharing the machine, to measure how much a co-runner costs `lamina bench`:
    python3 bench/serve/corunner.py 0.12 & lamina bench --batch 8 -p 16; kill %1
"""
import time, sys
duty = float(sys.argv[1])
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < 0.0002 * duty / (1 - duty):
        pass
    time.sleep(0.0002)
