"""Open a GeoPackage's buildings layer in QGIS, headless, and report what QGIS sees as JSON.

Run by Debian's /usr/bin/python3 (which has the qgis module), not by the project's venv:
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_open.py FILE.gpkg
"""

import json
import sys

from qgis.core import Qgis, QgsApplication, QgsVectorLayer

messages = []


def keep(message, tag, level):
    if level >= Qgis.Warning:
        messages.append(f"{tag}: {message}")


app = QgsApplication([], False)
app.initQgis()
QgsApplication.messageLog().messageReceived.connect(keep)
layer = QgsVectorLayer(f"{sys.argv[1]}|layername=buildings", "buildings", "ogr")
renderer = layer.renderer() if layer.isValid() else None
features = list(layer.getFeatures()) if layer.isValid() else []
report = {
    "qgis": Qgis.QGIS_VERSION,
    "valid": layer.isValid(),
    "features": layer.featureCount(),
    "crs": layer.crs().authid(),
    "fields": [f.name() for f in layer.fields()],
    "renderer": renderer.type() if renderer else None,
    "renderer_attribute": renderer.classAttribute()
    if renderer and renderer.type() == "graduatedSymbol"
    else None,
    "geometries_valid": all(f.geometry().isGeosValid() for f in features),
    "spatial_index": int(layer.hasSpatialIndex()),
    "messages": messages,
}
del features, renderer, layer  # QGIS objects must go before exitQgis()
app.exitQgis()
print(json.dumps(report))
