"""Versioned routes, one module per resource; ``ROUTERS`` is what the app factory mounts."""

from __future__ import annotations

from fastapi import APIRouter

from budgetnas.lut_server.routes import accuracy, artifacts, checkpoints, devices, jobs, luts, ops, predict, transfers

ROUTERS: list[APIRouter] = [m.router for m in (predict, ops, devices, luts, jobs, accuracy, artifacts, checkpoints,
                                                   transfers)]
